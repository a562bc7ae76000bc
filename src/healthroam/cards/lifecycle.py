"""The card lifecycle (卡片生命周期) as a state machine: which action is allowed in which state.

::

    apply -> applied (申请) --issue--> pending-activation (待激活) --activate--> active (生效)
    active --report-lost--> lost (挂失) --recover--> active
    active --freeze--> frozen (冻结) --unfreeze--> active;  frozen --report-lost--> lost
    any state but cancelled --cancel--> cancelled (注销, final)
    pending-activation | active | lost | frozen --reissue--> cancelled, plus a new card (补卡)

Every other (state, action) pair is refused with :class:`~healthroam.errors.Conflict`, naming
the state and what can be done instead. Pure: no storage, no framework.
"""

from __future__ import annotations

from healthroam.cards.model import CardAction, CardStatus
from healthroam.errors import Conflict

A, S = CardAction, CardStatus

TRANSITIONS: dict[tuple[CardStatus, CardAction], CardStatus] = {
    (S.APPLIED, A.ISSUE): S.PENDING_ACTIVATION,
    (S.PENDING_ACTIVATION, A.ACTIVATE): S.ACTIVE,
    (S.ACTIVE, A.REPORT_LOST): S.LOST,
    (S.FROZEN, A.REPORT_LOST): S.LOST,
    (S.LOST, A.RECOVER): S.ACTIVE,
    (S.ACTIVE, A.FREEZE): S.FROZEN,
    (S.FROZEN, A.UNFREEZE): S.ACTIVE,
    **{(s, A.CANCEL): S.CANCELLED for s in CardStatus if s is not S.CANCELLED},
    **{(s, A.REISSUE): S.CANCELLED for s in (S.PENDING_ACTIVATION, S.ACTIVE, S.LOST, S.FROZEN)},
}

# Why an action is refused in a state, when there is more to say than "not allowed".
_HINTS: dict[CardStatus, str] = {
    S.APPLIED: "the card has not been issued yet ($issue)",
    S.PENDING_ACTIVATION: "the card is waiting for activation ($activate)",
    S.ACTIVE: "the card is active",
    S.LOST: "the card is reported lost: recover it ($recover), reissue it or cancel it",
    S.FROZEN: "the card is frozen: unfreeze it ($unfreeze) first",
    S.CANCELLED: "the card is cancelled, which is final: apply for or reissue a new card",
}


def allowed_actions(status: CardStatus) -> list[CardAction]:
    return [action for action in CardAction if (status, action) in TRANSITIONS]


def transition(status: CardStatus, action: CardAction) -> CardStatus:
    """The state after ``action``, or Conflict (409) explaining the refusal."""
    target = TRANSITIONS.get((status, action))
    if target is None:
        allowed = ", ".join(f"${a.value}" for a in allowed_actions(status)) or "none"
        raise Conflict(
            f"cannot {action.value} a card in state {status.value}: {_HINTS[status]} "
            f"(allowed: {allowed})",
            expression="Card.status",
        )
    return target
