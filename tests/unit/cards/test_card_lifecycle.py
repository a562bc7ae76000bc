"""The card state machine, exhaustively: every state x every action is allowed or refused."""

from __future__ import annotations

import pytest

from healthroam.cards.lifecycle import TRANSITIONS, allowed_actions, transition
from healthroam.cards.model import CardAction, CardStatus
from healthroam.errors import Conflict

A, S = CardAction, CardStatus

EXPECTED: dict[tuple[CardStatus, CardAction], CardStatus] = {
    (S.APPLIED, A.ISSUE): S.PENDING_ACTIVATION,
    (S.APPLIED, A.CANCEL): S.CANCELLED,
    (S.PENDING_ACTIVATION, A.ACTIVATE): S.ACTIVE,
    (S.PENDING_ACTIVATION, A.CANCEL): S.CANCELLED,
    (S.PENDING_ACTIVATION, A.REISSUE): S.CANCELLED,
    (S.ACTIVE, A.REPORT_LOST): S.LOST,
    (S.ACTIVE, A.FREEZE): S.FROZEN,
    (S.ACTIVE, A.CANCEL): S.CANCELLED,
    (S.ACTIVE, A.REISSUE): S.CANCELLED,
    (S.LOST, A.RECOVER): S.ACTIVE,
    (S.LOST, A.CANCEL): S.CANCELLED,
    (S.LOST, A.REISSUE): S.CANCELLED,
    (S.FROZEN, A.UNFREEZE): S.ACTIVE,
    (S.FROZEN, A.REPORT_LOST): S.LOST,
    (S.FROZEN, A.CANCEL): S.CANCELLED,
    (S.FROZEN, A.REISSUE): S.CANCELLED,
}


def test_the_table_is_exactly_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize("status", list(CardStatus))
@pytest.mark.parametrize("action", list(CardAction))
def test_every_state_and_action(status: CardStatus, action: CardAction) -> None:
    expected = EXPECTED.get((status, action))
    if expected is not None:
        assert transition(status, action) is expected
        assert action in allowed_actions(status)
        return
    with pytest.raises(Conflict) as caught:
        transition(status, action)
    error = caught.value
    assert error.status == 409
    assert error.expression == "Card.status"
    assert f"cannot {action.value} a card in state {status.value}" in error.detail
    assert "allowed:" in error.detail


def test_cancelled_is_final_and_says_so() -> None:
    assert allowed_actions(S.CANCELLED) == []
    with pytest.raises(Conflict, match="final"):
        transition(S.CANCELLED, A.ACTIVATE)


def test_lost_card_refusal_names_the_way_out() -> None:
    with pytest.raises(Conflict, match=r"recover it \(\$recover\)"):
        transition(S.LOST, A.ACTIVATE)


def test_revoked_states() -> None:
    assert {s for s in CardStatus if s.revoked} == {S.LOST, S.FROZEN, S.CANCELLED}
