"""Name data for the synthetic province: surnames, given-name characters, minority and
foreign names, and the homophone and traditional-script tables used to corrupt them.

Frequencies are approximations of published facts (Ministry of Public Security surname
statistics: 王, 李, 张, 刘, 陈 together carry about 30% of the population; the top hundred
about 85%). Hainan-specific: Li (黎族) people use Han-script names with a distinctive surname
mix (符, 王, 黎, 吉 ...); Hainan Miao (苗族) surnames are mostly 盘, 邓, 李, 蒋, 赵.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Top surnames with their approximate share of China's population, in percent.
_TOP_SURNAMES = (
    "王7.25 李7.19 张6.83 刘5.38 陈4.53 杨3.08 赵2.29 黄2.23 周2.05 吴2.05 徐1.67 孙1.54 胡1.31 "
    "朱1.28 马1.44 郭1.20 何1.17 高1.18 林1.14 罗0.99 郑0.97 梁0.91 谢0.81 宋0.76 唐0.81 许0.70 "
    "韩0.77 冯0.73 邓0.80 曹0.69 彭0.70 曾0.66 肖0.65 田0.63 董0.62 袁0.58 潘0.58 于0.56 蒋0.55 "
    "蔡0.55 余0.51 杜0.51 叶0.50 程0.48 苏0.47 魏0.46 吕0.46 丁0.45 任0.44 沈0.42 姚0.42 卢0.42 "
    "姜0.41 崔0.40 钟0.39 谭0.39 陆0.38 汪0.37 范0.37 金0.37 石0.36 廖0.35 贾0.34 夏0.33 韦0.33 "
    "付0.32 方0.32 白0.31 邹0.31 孟0.30 熊0.30 秦0.30 邱0.29 江0.29 尹0.28 薛0.28 闫0.27 段0.27 "
    "雷0.26 侯0.26 龙0.26 史0.25 陶0.24 黎0.24 贺0.24 顾0.23 毛0.23 郝0.23 龚0.22 邵0.22 万0.21 "
    "钱0.21 严0.20 覃0.20 武0.20 戴0.20 莫0.19 孔0.19 向0.19 汤0.18 符0.18"
)
# The long tail (about 15% of people), in rough frequency order; includes compound surnames.
_TAIL_SURNAMES = _words(
    "常 康 易 乔 赖 文 施 牛 庞 樊 殷 洪 葛 兰 章 柳 傅 俞 鲁 伍 欧 温 柴 "
    "季 包 邢 祝 梅 左 耿 岳 单 吉 羊 卓 容 云 麦 冼 詹 甘 植 凌 黎 蓝 农 "
    "盘 尧 萧 阎 舒 聂 申 车 翁 宁 焦 华 齐 阮 凤 吾 和 鱼 理 扬 阳 俊 "
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 令狐 慕容 司徒"
)
TAIL_SHARE = 0.15

# Given-name characters in rough frequency order (earlier = more common).
MALE_CHARS = (
    "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆帅旭宁龙林阳建国志文海东成峰亮晨博轩"
    "子然坤锋新杨彬振宏兵德永安鸿福生荣庆光"
)
FEMALE_CHARS = (
    "芳娜敏静丽艳娟霞秀英玲燕红梅婷雪琳晶颖倩慧莉萍洁欣怡佳思雨涵萱琪妍淑桂兰凤芬丹蓉月媛"
    "薇蕾瑶彤璐珊菲"
)
NEUTRAL_CHARS = "小晓春海明子佳雨宇欣文金玉云嘉一心诗家梓若天晴"

# Surname mixes of minority groups living in Hainan (approximate shares).
LI_SURNAMES = {
    "符": 24, "王": 15, "黎": 8, "陈": 8, "吉": 6, "黄": 5, "李": 5, "羊": 4, "董": 3,
    "刘": 3, "邢": 3, "胡": 3, "林": 3, "文": 3, "卓": 2, "容": 2, "高": 2, "麦": 1,
}  # fmt: skip
MIAO_SURNAMES = {"盘": 25, "邓": 20, "李": 15, "蒋": 12, "赵": 10, "陈": 6, "冯": 6, "王": 6}
ZHUANG_SURNAMES = {"韦": 30, "覃": 20, "黄": 15, "莫": 10, "蓝": 8, "农": 8, "陆": 9}

UYGHUR_MALE = _words(
    "阿卜杜拉 买买提 艾力 吐尔逊 艾尔肯 热合曼 依明 阿布都 克里木 伊力哈木 努尔 亚森 "
    "麦麦提 艾山 肉孜 库尔班 阿里木 玉素甫"
)
UYGHUR_FEMALE = _words("阿依古丽 古丽娜尔 帕提古丽 迪丽努尔 热娜 阿依努尔 玛依拉 努尔古丽 古丽米拉")
TIBETAN_PARTS = _words("扎西 次仁 卓玛 格桑 多吉 旦增 央金 拉姆 平措 索朗 德吉 尼玛 达瓦 白玛 普布")
MIDDLE_DOT = "\u00b7"  # the separator the public security system uses in transliterated names

FOREIGN_GIVEN = _words(
    "John Michael David James Robert Anna Maria Elena Olga Natalia Sarah Emma Thomas Peter "
    "Alexander Ivan Dmitry Sergei Kim Yuki Hiroshi Minho Jiwoo Lucas Sophie Laura Daniel"
)
FOREIGN_FAMILY = _words(
    "Smith Johnson Brown Miller Wilson Ivanov Ivanova Petrov Smirnova Kuznetsov Mueller Schmidt "
    "Martin Bernard Dubois Kim Lee Park Choi Tanaka Suzuki Sato Nguyen Tran Garcia Rossi Novak "
    "Kowalski Andersson"
)
NATIONALITIES = _words("RUS USA GBR DEU FRA KOR JPN CAN AUS KAZ UKR MYS SGP THA VNM IND ITA POL")

# Extra common characters: the pool of possible homophone substitutes and random typos.
_EXTRA_CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下"
    "过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都"
    "两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重"
    "新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想"
    "已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知"
    "较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造"
    "百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白"
    "教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集"
    "温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿"
    "千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存"
    "候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该"
    "铁价严龙飞伟薇维卫为未位味魏尉慰微韦唯惟围违威巍章彰樟璋漳獐李理里礼立力丽利历黎莉莉"
)


def _surname_table() -> tuple[tuple[str, ...], npt.NDArray[np.float64]]:
    top = [(item[0], float(item[1:])) for item in _TOP_SURNAMES.split()]
    names = [n for n, _ in top]
    tail = [n for n in dict.fromkeys(_TAIL_SURNAMES) if n not in names]
    top_weights = np.array([w for _, w in top]) / 100.0
    # Tail weights fall off geometrically and together make TAIL_SHARE.
    decay = 0.97 ** np.arange(len(tail))
    tail_weights = decay / decay.sum() * TAIL_SHARE
    weights = np.concatenate([top_weights, tail_weights])
    return tuple(names + tail), weights / weights.sum()


SURNAMES, SURNAME_WEIGHTS = _surname_table()


def zipf_weights(n: int, offset: float = 4.0) -> npt.NDArray[np.float64]:
    """Weights that fall off like 1/(rank + offset): a few characters are very common."""
    w = 1.0 / (np.arange(n) + offset)
    return np.asarray(w / w.sum(), dtype=np.float64)


@functools.cache
def character_table() -> tuple[str, ...]:
    """Every character a given name or a corruption of one can contain, without repeats."""
    chars = MALE_CHARS + FEMALE_CHARS + NEUTRAL_CHARS + _EXTRA_CHARS
    return tuple(dict.fromkeys(c for c in chars))


@functools.cache
def homophones() -> dict[str, tuple[str, ...]]:
    """For each name character and surname, other characters read the same (ignoring tone).

    Built with pypinyin; 张 -> 章 彰 樟 ..., 李 -> 理 里 礼 黎 ... Characters without a
    homophone in the table are absent.
    """
    from pypinyin import Style, lazy_pinyin

    pool = list(character_table()) + [s for s in SURNAMES if len(s) == 1]
    pool = list(dict.fromkeys(pool))
    toned = lazy_pinyin(pool, style=Style.TONE3, neutral_tone_with_five=True)
    plain = lazy_pinyin(pool, style=Style.NORMAL)
    same_tone: dict[str, list[str]] = {}
    same_sound: dict[str, list[str]] = {}
    for char, tone, sound in zip(pool, toned, plain, strict=True):
        same_tone.setdefault(tone, []).append(char)
        same_sound.setdefault(sound, []).append(char)
    table: dict[str, tuple[str, ...]] = {}
    for char, tone, sound in zip(pool, toned, plain, strict=True):
        # Same tone first (张/章); a different tone only when nothing else sounds alike.
        others = tuple(c for c in same_tone[tone] if c != char) or tuple(
            c for c in same_sound[sound] if c != char
        )
        if others:
            table[char] = others
    return table


@functools.cache
def _converter() -> Any:
    import opencc

    return opencc.OpenCC("s2t")


def to_traditional(text: str) -> str:
    """The text in traditional script (opencc s2t), e.g. 陈伟 -> 陳偉."""
    converter = _converter()
    result: str = converter.convert(text)
    return result
