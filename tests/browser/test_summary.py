"""The whole record at any hospital, in headless chromium against a real server: scan a real
dynamic card code, read the summary with items from two hospitals (each labelled with its
hospital), switch to English, break the glass for a patient without a care relationship."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.cards.model import CardAction
from healthroam.db.schema import audit_events
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

from .conftest import sign_in
from helpers import patient


def _system(institution: str) -> Principal:
    return Principal(
        f"his-{institution}",
        institution,
        ScopeSet.parse("system/*.cruds system/Card.cruds"),
        end_user="registrar",
    )


def _register(platform: Platform, institution: str, resource: dict[str, Any]) -> tuple[str, str]:
    created = platform.records.create(_system(institution), "Patient", resource)
    assert created.registration is not None
    return created.stored.id, created.registration.master_index_id


def _add(platform: Platform, institution: str, resource: dict[str, Any]) -> None:
    platform.records.create(_system(institution), resource["resourceType"], resource)


def _condition(pid: str, text: str, onset: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"text": text},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "onsetDateTime": onset,
    }


@pytest.fixture
def resident(hospitals: Platform) -> tuple[str, str]:
    """陈海, registered at both hospitals with records at each, holding an active card.
    Returns (master index ID, card id)."""
    p1, mid = _register(hospitals, "H001", patient("陈海", gender="male", sequence=171))
    p2, mid2 = _register(hospitals, "H002", patient("陈海", gender="male", sequence=171))
    assert mid == mid2
    _add(
        hospitals,
        "H001",
        {
            "resourceType": "AllergyIntolerance",
            "patient": {"reference": f"Patient/{p1}"},
            "code": {"text": "青霉素"},
            "criticality": "high",
            "recordedDate": "2024-05-06",
        },
    )
    _add(hospitals, "H002", _condition(p2, "2型糖尿病", "2025-03-01"))
    _add(
        hospitals,
        "H002",
        {
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": f"Patient/{p2}"},
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "4548-4"}],
                "text": "糖化血红蛋白",
            },
            "effectiveDateTime": "2026-11-20T09:15:00+08:00",
            "valueQuantity": {
                "value": 7.1,
                "unit": "%",
                "system": "http://unitsofmeasure.org",
                "code": "%",
            },
        },
    )
    hospitals.keys.init()
    issuer = _system("H001")
    card = hospitals.cards.apply(issuer, master_index_id=mid, kind="electronic")
    hospitals.cards.act(issuer, card.id, CardAction.ISSUE)
    hospitals.cards.act(issuer, card.id, CardAction.ACTIVATE)
    return mid, card.id


def test_scan_a_card_and_read_the_record_from_both_hospitals(
    hospitals: Platform, resident: tuple[str, str], page: Page
) -> None:
    mid, card_id = resident
    sign_in(page)
    expect(page.locator("h1")).to_have_text("查找患者")
    # The resident shows the app's dynamic QR code; the scanner types it and presses Enter.
    code = hospitals.cards.dynamic_code(_system("H001"), card_id)
    page.locator("#code").press_sequentially(code, delay=0)
    page.locator("#code").press("Enter")

    expect(page.locator("h1")).to_have_text("健康档案摘要")
    expect(page.locator("#person-name")).to_have_text("陈海")
    expect(page.locator("#person-mid")).to_have_text(mid)
    expect(page.locator("#access")).to_contain_text("本院诊疗关系")
    allergy = page.locator("#section-allergies tr.item")
    expect(allergy).to_have_count(1)
    expect(allergy.locator("td").first).to_have_text("青霉素")
    expect(allergy.locator("td.source")).to_have_text("海南省人民医院")
    problem = page.locator("#section-problems tr.item")
    expect(problem.locator("td").first).to_have_text("2型糖尿病")
    expect(problem.locator("td.source")).to_have_text("三亚市人民医院")
    expect(problem.locator("td.date")).to_have_text("2025-03-01")
    result = page.locator("#section-results tr.item")
    expect(result.locator("td").nth(1)).to_have_text("7.1 %")
    expect(result.locator("td.date")).to_have_text("2026-11-20 09:15")
    expect(result.locator("td.source")).to_have_text("三亚市人民医院")
    # The check-in opened an encounter at this hospital: it is in the record too.
    expect(page.locator("#section-encounters td.source").first).to_have_text("海南省人民医院")
    expect(page.locator("#section-immunizations p.empty")).to_have_text("无记录")

    page.click("#lang-switch")
    expect(page.locator("h1")).to_have_text("Record summary")
    expect(page.locator("#section-allergies h2")).to_contain_text("Allergies")
    expect(page.locator("#section-problems td.source")).to_have_text("三亚市人民医院")
    expect(page.locator("#access")).to_contain_text("care relationship")

    hospitals.audit.seal()
    with hospitals.db.transaction(readonly=True) as conn:
        reads = conn.execute(
            select(audit_events.c.subtype, audit_events.c.institution_code)
            .where(audit_events.c.end_user == "dr.li")
            .order_by(audit_events.c.seq)
        ).all()
    subtypes = [r.subtype for r in reads]
    assert "card-verify" in subtypes
    assert "check-in" in subtypes
    assert subtypes.count("summary") == 2
    assert {r.institution_code for r in reads} == {"H001"}


def test_break_the_glass_needs_a_reason_and_is_recorded(hospitals: Platform, page: Page) -> None:
    # 黎阿妹 has records only at the other hospital and no relationship with H001.
    pid, mid = _register(hospitals, "H002", patient("黎阿妹", sequence=188))
    _add(hospitals, "H002", _condition(pid, "高血压", "2023-07-01"))
    sign_in(page)
    page.fill("#mid", mid)
    page.click("#open")
    expect(page.locator("h1")).to_have_text("紧急授权访问（破窗）")
    expect(page.locator("#btg-explain")).to_contain_text("没有诊疗关系")
    # Blank reason (spaces pass the browser's minlength): refused by the server.
    page.fill("#reason", "      ")
    page.click("#break-glass")
    expect(page.locator("#message")).to_have_text("请填写访问理由（5至500个字）。")
    page.fill("#reason", "急诊昏迷患者，需了解既往病史")
    page.click("#break-glass")

    expect(page.locator("h1")).to_have_text("健康档案摘要")
    expect(page.locator("#access")).to_contain_text("紧急授权访问")
    expect(page.locator("#section-problems td").first).to_have_text("高血压")
    expect(page.locator("#section-problems td.source")).to_have_text("三亚市人民医院")
    exception_id = int(page.locator("#exception").inner_text())
    # Switching language asks again: each break-the-glass view is its own audited access.
    page.click("#lang-switch")
    expect(page.locator("h1")).to_have_text("Break the glass")
    expect(page.locator("#break-glass")).to_have_text("Open the record")

    exceptions = hospitals.care.exceptions(
        Principal("privacy", "H001", ScopeSet.parse("system/*.cruds"), end_user="officer")
    )
    recorded = next(e for e in exceptions if e.id == exception_id)
    assert (recorded.master_index_id, recorded.end_user, recorded.institution_code) == (
        mid,
        "dr.li",
        "H001",
    )
    assert recorded.reason == "急诊昏迷患者，需了解既往病史"
    hospitals.audit.seal()
    with hospitals.db.transaction(readonly=True) as conn:
        purposes = (
            conn.execute(
                select(audit_events.c.purpose_of_use).where(
                    audit_events.c.end_user == "dr.li", audit_events.c.subtype == "summary"
                )
            )
            .scalars()
            .all()
        )
    assert "BTG" in purposes


def test_a_refused_card_says_why(
    hospitals: Platform, resident: tuple[str, str], page: Page
) -> None:
    _, card_id = resident
    issuer = _system("H001")
    lost = hospitals.cards.act(issuer, card_id, CardAction.REPORT_LOST)
    assert lost.static_code
    sign_in(page)
    page.fill("#code", lost.static_code)
    page.press("#code", "Enter")
    expect(page.locator("#message")).to_contain_text("该卡无法使用：该卡已挂失。")
    page.fill("#code", "not a card")
    page.press("#code", "Enter")
    expect(page.locator("#message")).to_contain_text("不是有效的居民健康卡二维码。")
    expect(page.locator("h1")).to_have_text("查找患者")
    page.click("#lang-switch")
    expect(page.locator("h1")).to_have_text("Find a patient")
