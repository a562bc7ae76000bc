"""Health cards (健康卡): kinds, states, actions, cards, holders and the use-code tables.

Plain data and rules; no storage, no framework. The lifecycle's transitions live in
:mod:`healthroam.cards.lifecycle`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from healthroam.errors import InvalidInput

NATIONAL_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"  # 居民身份证号
# Identifier systems that can carry a card for a person without a national ID, and their
# WS 364.3 CV02.01.101 certificate type code.
DOCUMENT_SYSTEMS = {
    NATIONAL_ID_SYSTEM: "01",
    "urn:healthroam:passport": "03",
    "urn:healthroam:hk-macao-permit": "06",
    "urn:healthroam:taiwan-permit": "07",
}
_ID_NUMBER = re.compile(r"[0-9A-Za-z]{1,30}")
_CARD_NO = re.compile(r"[0-9A-Z]{8,32}")


class CardKind(StrEnum):
    PHYSICAL = "physical"  # 居民健康卡 (CPU card), identified by its card number
    ELECTRONIC = "electronic"  # 电子健康卡, identified by its EHC ID
    TEMPORARY = "temporary"  # 临时卡: visitors without a national ID (passport, permits)


class CardStatus(StrEnum):
    APPLIED = "applied"  # 申请
    PENDING_ACTIVATION = "pending-activation"  # 待激活
    ACTIVE = "active"  # 生效
    LOST = "lost"  # 挂失
    FROZEN = "frozen"  # 冻结
    CANCELLED = "cancelled"  # 注销

    @property
    def revoked(self) -> bool:
        """Whether offline credentials of a card in this state must be refused."""
        return self in (CardStatus.LOST, CardStatus.FROZEN, CardStatus.CANCELLED)


class CardAction(StrEnum):
    ISSUE = "issue"  # 制卡/发卡: applied -> pending-activation
    ACTIVATE = "activate"  # 激活
    REPORT_LOST = "report-lost"  # 挂失
    RECOVER = "recover"  # 解挂
    FREEZE = "freeze"  # 冻结
    UNFREEZE = "unfreeze"  # 解冻
    CANCEL = "cancel"  # 注销
    REISSUE = "reissue"  # 补卡 (the old card is cancelled, a new one made)


# 用卡环节: where in the visit the card is used.
STEP_CODES: dict[str, tuple[str, str]] = {
    "01": ("registration", "挂号/建档"),
    "02": ("consultation", "就诊"),
    "03": ("payment", "缴费/结算"),
    "04": ("pharmacy", "取药"),
    "05": ("examination", "检查检验"),
    "06": ("admission", "入院"),
    "07": ("discharge", "出院"),
    "08": ("public-health", "公共卫生服务/预防接种"),
    "09": ("identity-check", "身份核验"),
    "99": ("other", "其他"),
}
# 用卡渠道: what the card was presented to.
CHANNEL_CODES: dict[str, tuple[str, str]] = {
    "01": ("counter", "窗口"),
    "02": ("kiosk", "自助机"),
    "03": ("workstation", "诊间/医生工作站"),
    "04": ("mobile", "移动端"),
    "05": ("pharmacy", "药店"),
    "99": ("other", "其他"),
}
_TERMINAL = re.compile(r"[0-9A-Za-z._-]{1,64}")


def check_use_codes(step: str, channel: str, terminal: str) -> None:
    if step not in STEP_CODES:
        raise InvalidInput("unknown card-use step code (see STEP_CODES)", expression="step")
    if channel not in CHANNEL_CODES:
        raise InvalidInput("unknown channel code (see CHANNEL_CODES)", expression="channel")
    if not isinstance(terminal, str) or not _TERMINAL.fullmatch(terminal):
        raise InvalidInput(
            "terminal code must be 1-64 letters, digits, '.', '_' or '-'", expression="terminal"
        )


def check_card_no(card_no: str) -> str:
    if not isinstance(card_no, str) or not _CARD_NO.fullmatch(card_no):
        raise InvalidInput("card number must be 8-32 of [0-9A-Z]", expression="cardNo")
    return card_no


def luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something to a card: the client, its institution and the person acting."""

    client_id: str | None
    institution_code: str | None
    end_user: str | None = None


@dataclass(frozen=True, slots=True)
class Card:
    id: str
    master_person_id: int
    master_index_id: str
    kind: CardKind
    card_no: str | None
    ehc_id: str | None
    id_type: str
    status: CardStatus
    status_version: int
    region: str
    issuer: str
    valid_from: datetime
    valid_until: datetime
    issuing_key_id: str | None
    ehc_root_key_id: str | None
    credential: str | None
    static_code: str | None
    replaces: str | None
    replaced_by: str | None
    batch_id: str | None
    created_at: datetime
    updated_at: datetime
    credential_version: int | None = None  # status version the stored credential carries


@dataclass(frozen=True, slots=True)
class CardEvent:
    seq: int
    card_id: str
    occurred_at: datetime
    action: str
    from_status: str | None
    to_status: str
    status_version: int
    client_id: str | None
    institution_code: str | None
    end_user: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Holder:
    """The card holder as the master person index knows them (from the golden record)."""

    master_person_id: int
    master_index_id: str
    name: str | None
    sex: int  # GB/T 2261.1
    birth_date: date | None
    region: str | None
    id_type: str | None  # the document the card is bound to
    id_number: str | None

    @property
    def kind(self) -> CardKind:
        """A national ID gets a resident card; another document a temporary card."""
        return CardKind.ELECTRONIC if self.id_type == "01" else CardKind.TEMPORARY


def _sex(value: Any) -> int:
    text = str(value or "").strip().lower()
    if text in ("1", "male", "m", "男"):
        return 1
    if text in ("2", "female", "f", "女"):
        return 2
    if text in ("9", "unspecified"):
        return 9
    return 0


def _date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def _documents(golden: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    national = golden.get("national_id") or golden.get("nationalId")
    if isinstance(national, str):
        found.append((NATIONAL_ID_SYSTEM, national))
    for item in golden.get("identifiers") or []:
        if isinstance(item, str) and "|" in item:
            system, _, value = item.rpartition("|")
        elif isinstance(item, dict):
            system, value = str(item.get("system", "")), str(item.get("value", ""))
        else:
            continue
        found.append((system, value))
    return found


def holder_from_golden(master_person_id: int, master_index_id: str, golden: Any) -> Holder:
    """Read a golden record (``name``, ``sex``, ``birth_date``/``birthDate``, ``region``,
    ``national_id`` and ``identifiers`` as ``system|value`` strings or objects); the card is
    bound to the national ID, else a passport or travel permit."""
    data = golden if isinstance(golden, dict) else {}
    id_type = id_number = None
    documents = _documents(data)
    for system, code in sorted(DOCUMENT_SYSTEMS.items(), key=lambda item: item[1]):
        for doc_system, value in documents:
            if doc_system == system and _ID_NUMBER.fullmatch(value):
                id_type, id_number = code, value.upper()
                break
        if id_type:
            break
    region = data.get("region")
    if not (isinstance(region, str) and re.fullmatch(r"[0-9]{6}", region)):
        region = id_number[:6] if id_type == "01" and id_number else None
    name = data.get("name") or data.get("latin_name")
    return Holder(
        master_person_id=master_person_id,
        master_index_id=master_index_id,
        name=str(name).strip()[:32] if name else None,
        sex=_sex(data.get("sex") or data.get("gender")),
        birth_date=_date(data.get("birth_date") or data.get("birthDate")),
        region=region,
        id_type=id_type,
        id_number=id_number,
    )


def masked_document(id_number: str) -> str:
    """Keep at most the first four and last four characters, and always mask four or more."""
    n = len(id_number)
    if n >= 12:
        return id_number[:4] + "*" * (n - 8) + id_number[-4:]
    keep = max(0, n - 4)
    return "*" * 4 + id_number[n - min(keep, 4) :] if keep else "****"


def region_prefix(region: str) -> str:
    """Scope prefix of a GB/T 2260 code: 460000 -> 46, 460100 -> 4601, 460106 -> 460106."""
    if not re.fullmatch(r"[0-9]{6}", region):
        raise InvalidInput("region must be a six-digit GB/T 2260 code", expression="region")
    if region.endswith("0000"):
        return region[:2]
    if region.endswith("00"):
        return region[:4]
    return region
