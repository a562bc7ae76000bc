"""The clinician page's one message catalogue: every label in 简体中文 (default) and English.

Templates look labels up by key (``t("summary.allergies")``); a key missing from either
language is a bug that a unit test catches.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"

MESSAGES: Mapping[str, Mapping[str, str]] = {
    "zh-CN": {
        "app.title": "居民健康档案 · 医生工作站",
        "app.language_switch": "English",
        "app.skip": "跳到正文",
        "login.title": "登录",
        "login.username": "用户名",
        "login.password": "密码",
        "login.submit": "登录",
        "login.refused": "用户名或密码错误。",
        "login.locked": "密码连续错误次数过多，账户已暂时锁定，请稍后再试或联系管理员。",
        "login.throttled": "本机登录失败次数过多，请稍后再试。",
        "login.expired": "登录已过期，请重新登录。",
        "login.bad_form": "表单已失效，请重新提交。",
        "header.signed_in_as": "当前用户",
        "header.logout": "退出登录",
        "lookup.title": "查找患者",
        "lookup.scan": "扫描居民健康卡",
        "lookup.scan_help": "将光标置于此框，用扫码枪扫描患者出示的电子健康卡二维码。",
        "lookup.scan_submit": "签到并查看",
        "lookup.by_id": "按主索引号打开",
        "lookup.by_id_help": "仅限与本院已有诊疗关系的患者。",
        "lookup.mid": "主索引号",
        "lookup.open": "打开",
        "lookup.purpose": "就诊类型",
        "purpose.outpatient": "门诊",
        "purpose.emergency": "急诊",
        "purpose.inpatient": "住院",
        "purpose.examination": "体检",
        "purpose.public-health": "公共卫生",
        "scan.refused": "该卡无法使用：",
        "scan.reason.card-lost": "该卡已挂失。",
        "scan.reason.card-frozen": "该卡已冻结。",
        "scan.reason.card-cancelled": "该卡已注销。",
        "scan.reason.card-not-active": "该卡尚未启用。",
        "scan.reason.card-expired": "该卡已过有效期。",
        "scan.reason.unknown-card": "未找到该卡。",
        "scan.reason.expired": "二维码已过期，请患者刷新动态码后重新扫描。",
        "scan.reason.replayed": "该动态码已使用过，请患者刷新后重新扫描。",
        "scan.reason.superseded": "该凭证已被新卡取代。",
        "scan.reason.revoked": "该卡已被撤销。",
        "scan.reason.invalid": "不是有效的居民健康卡二维码。",
        "summary.title": "健康档案摘要",
        "summary.person": "患者",
        "summary.sex": "性别",
        "summary.birth_date": "出生日期",
        "summary.mid": "主索引号",
        "summary.generated": "生成时间",
        "summary.sources": "数据来源",
        "summary.problems": "问题/诊断",
        "summary.allergies": "过敏",
        "summary.medications": "用药",
        "summary.encounters": "近期就诊",
        "summary.results": "检查检验结果",
        "summary.immunizations": "预防接种",
        "summary.documents": "文书",
        "summary.empty": "无记录",
        "summary.source": "来源",
        "summary.date": "日期",
        "summary.status": "状态",
        "summary.detail": "详情",
        "summary.item": "项目",
        "summary.back": "查找其他患者",
        "sex.1": "男",
        "sex.2": "女",
        "sex.0": "未知",
        "sex.9": "未说明",
        "access.care-relationship": "访问依据：本院诊疗关系",
        "access.own-data": "访问依据：本院数据",
        "access.break-the-glass": "紧急授权访问（已记录，待审核）",
        "access.custodian": "访问依据：管理机构",
        "consent.restricted": "患者已拒绝向本院共享其他机构的数据，以下仅显示本院记录。",
        "consent.overridden": "患者曾拒绝共享；因紧急授权，已显示全部数据。此次访问将被审核。",
        "btg.title": "紧急授权访问（破窗）",
        "btg.explain": "本院与该患者没有诊疗关系（未刷卡签到，也无进行中的就诊）。如确因诊疗需要，"
        "可说明理由后紧急访问。此次访问及理由将被记录并由隐私管理员审核。",
        "btg.reason": "访问理由（必填）",
        "btg.submit": "确认紧急访问",
        "btg.reason_required": "请填写访问理由（5至500个字）。",
        "btg.recorded": "紧急访问已记录，编号",
        "error.title": "出错了",
        "error.not_found": "未找到该患者。",
        "error.forbidden": "无权访问。",
        "error.invalid": "输入有误：",
    },
    "en": {
        "app.title": "Resident health record · Clinician workstation",
        "app.language_switch": "中文",
        "app.skip": "Skip to content",
        "login.title": "Sign in",
        "login.username": "Username",
        "login.password": "Password",
        "login.submit": "Sign in",
        "login.refused": "Wrong username or password.",
        "login.locked": "Too many wrong passwords: the account is locked for a while. Try again "
        "later or ask your administrator.",
        "login.throttled": "Too many failed sign-ins from this computer. Try again later.",
        "login.expired": "Your session has ended. Please sign in again.",
        "login.bad_form": "The form has expired. Please submit it again.",
        "header.signed_in_as": "Signed in as",
        "header.logout": "Sign out",
        "lookup.title": "Find a patient",
        "lookup.scan": "Scan the resident health card",
        "lookup.scan_help": "Put the cursor in this box and scan the patient's health card QR "
        "code with the scanner.",
        "lookup.scan_submit": "Check in and open",
        "lookup.by_id": "Open by master index ID",
        "lookup.by_id_help": "Only for patients who already have a care relationship here.",
        "lookup.mid": "Master index ID",
        "lookup.open": "Open",
        "lookup.purpose": "Visit type",
        "purpose.outpatient": "Outpatient",
        "purpose.emergency": "Emergency",
        "purpose.inpatient": "Inpatient",
        "purpose.examination": "Health check",
        "purpose.public-health": "Public health",
        "scan.refused": "The card cannot be used: ",
        "scan.reason.card-lost": "the card was reported lost.",
        "scan.reason.card-frozen": "the card is frozen.",
        "scan.reason.card-cancelled": "the card is cancelled.",
        "scan.reason.card-not-active": "the card is not activated yet.",
        "scan.reason.card-expired": "the card has expired.",
        "scan.reason.unknown-card": "no card has this code.",
        "scan.reason.expired": "the QR code has expired; ask the patient to refresh it and scan "
        "again.",
        "scan.reason.replayed": "this dynamic code was already used; ask the patient to refresh "
        "it.",
        "scan.reason.superseded": "this credential belongs to a card since re-issued.",
        "scan.reason.revoked": "the card has been revoked.",
        "scan.reason.invalid": "not a resident health card QR code.",
        "summary.title": "Record summary",
        "summary.person": "Patient",
        "summary.sex": "Sex",
        "summary.birth_date": "Date of birth",
        "summary.mid": "Master index ID",
        "summary.generated": "Generated",
        "summary.sources": "Sources",
        "summary.problems": "Problems",
        "summary.allergies": "Allergies",
        "summary.medications": "Medications",
        "summary.encounters": "Recent encounters",
        "summary.results": "Results",
        "summary.immunizations": "Immunisations",
        "summary.documents": "Documents",
        "summary.empty": "None recorded",
        "summary.source": "Source",
        "summary.date": "Date",
        "summary.status": "Status",
        "summary.detail": "Detail",
        "summary.item": "Item",
        "summary.back": "Find another patient",
        "sex.1": "Male",
        "sex.2": "Female",
        "sex.0": "Unknown",
        "sex.9": "Not stated",
        "access.care-relationship": "Access: care relationship at your hospital",
        "access.own-data": "Access: your hospital's own data",
        "access.break-the-glass": "Break-the-glass access (recorded, to be reviewed)",
        "access.custodian": "Access: custodian agency",
        "consent.restricted": "The patient has refused sharing other institutions' data with "
        "your hospital: only your hospital's records are shown.",
        "consent.overridden": "The patient had refused sharing; break-the-glass shows all data. "
        "This access will be reviewed.",
        "btg.title": "Break the glass",
        "btg.explain": "Your hospital has no care relationship with this patient (no card "
        "check-in, no active encounter). If you need the record for care, state the reason to "
        "open it. The access and your reason are recorded and reviewed by the privacy officer.",
        "btg.reason": "Reason (required)",
        "btg.submit": "Open the record",
        "btg.reason_required": "State the reason (5 to 500 characters).",
        "btg.recorded": "Break-the-glass access recorded, number",
        "error.title": "Something went wrong",
        "error.not_found": "No such patient.",
        "error.forbidden": "Access refused.",
        "error.invalid": "Invalid input: ",
    },
}


def language(requested: str | None) -> str:
    """The supported language closest to ``requested`` (a cookie or query value)."""
    if requested:
        lowered = requested.strip().lower()
        if lowered.startswith("en"):
            return "en"
        if lowered.startswith("zh"):
            return "zh-CN"
    return DEFAULT_LANGUAGE


def translator(lang: str) -> dict[str, str]:
    return dict(MESSAGES[language(lang)])
