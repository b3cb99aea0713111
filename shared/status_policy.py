"""The one place where Africa's Talking's words meet Reach's actions (design §6, at-api.md §2.2, §3, §5.2).

`POLICY` is a single table: for each AT value of each kind (send statusCode, DLR status, DLR
failureReason, voice hangupCause) the action Reach takes. Everything else asks `decide()`; nothing else
in the code base compares against AT's status strings. Values match without regard to case, and callbacks
are parsed into the table's spelling (`canonical`), so that is what Postgres keeps. Unknown values are
accepted and treated conservatively (`UNKNOWN_POLICY`), never rejected.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


class Kind(enum.StrEnum):
    SEND = "send_status_code"  # per-recipient statusCode in the /messaging answer (int, as a string key)
    DLR = "dlr_status"  # `status` of a delivery report
    FAILURE = "failure_reason"  # `failureReason` of a Failed/Rejected delivery report
    HANGUP = "hangup_cause"  # `hangupCause` of a final voice callback


class Action(enum.StrEnum):
    ACCEPTED = "accepted"  # send: AT took the message; wait for its delivery report
    IN_TRANSIT = "in_transit"  # DLR: not final yet; the contact stays pending
    DELIVERED = "delivered"  # DLR Success: the contact is active
    UNDELIVERED = "undelivered"  # final failure: the contact is inactive (voice next cycle)
    INVALID = "invalid"  # the number does not exist: the contact is invalid, never retried
    OPT_OUT = "opt_out"  # the customer blacklisted us: the contact is opted out
    RETRY = "retry"  # transient (AT or gateway side): retry with backoff, then fail
    PAUSE = "pause"  # account problem: pause the cycle, alert the operator, contacts untouched
    REJECTED = "rejected"  # not sent for a reason on our side (sender id, routing); contact untouched
    #: send: not sent at this hour (a promotional sender id's quiet hours): the SMS waits for the country's
    #: promotional window (shared/sender_rules.py), once; refused again there, it fails. Contact untouched.
    WAIT_FOR_WINDOW = "wait_for_window"
    ANSWERED = "answered"  # voice: the customer picked up
    RETRY_LATER = "retry_later"  # voice: busy / no answer / unreachable; call again later in the cycle
    UNREACHED = "unreached"  # voice: not reached and not worth retrying in this cycle


@dataclass(frozen=True)
class Rule:
    action: Action
    why: str
    #: DLR statuses only: statuses only move forward, by this rank (see `dlr_rank`).
    rank: int = 0
    #: Final SMS failures only: the failure says nothing lasting about the number (a phone that was off), so
    #: once the customer proves reachable after it (their SMS or USSD session, an acknowledged call) the
    #: contact is `active` again and gets SMS, not a call, next cycle (shared/reachability.py).
    clears_on_reach: bool = False


# fmt: off
POLICY: dict[tuple[Kind, str], Rule] = {
    # -- SMS send statusCode (at-api.md §2.2) ---------------------------------------------------------------
    (Kind.SEND, "100"): Rule(Action.ACCEPTED, "Processed"),
    (Kind.SEND, "101"): Rule(Action.ACCEPTED, "Sent"),
    (Kind.SEND, "102"): Rule(Action.ACCEPTED, "Queued"),
    (Kind.SEND, "401"): Rule(Action.REJECTED, "RiskHold: AT held the message; review the account"),
    (Kind.SEND, "402"): Rule(Action.PAUSE, "InvalidSenderId: every message would fail; fix AT_SENDER_ID"),
    (Kind.SEND, "403"): Rule(Action.INVALID, "InvalidPhoneNumber: permanent"),
    (Kind.SEND, "404"): Rule(Action.INVALID, "UnsupportedNumberType: permanent"),
    (Kind.SEND, "405"): Rule(Action.PAUSE, "InsufficientBalance: an account problem, not the customer's"),
    (Kind.SEND, "406"): Rule(Action.OPT_OUT, "UserInBlacklist: the customer opted out of this sender"),
    (Kind.SEND, "407"): Rule(Action.UNDELIVERED, "CouldNotRoute: SMS cannot reach them; call instead"),
    (Kind.SEND, "409"): Rule(
        Action.WAIT_FOR_WINDOW, "DoNotDisturbRejection: promotional quiet hours (Nigeria); sent again when they end"
    ),
    (Kind.SEND, "500"): Rule(Action.RETRY, "InternalServerError: transient"),
    (Kind.SEND, "501"): Rule(Action.RETRY, "GatewayError: transient"),
    (Kind.SEND, "502"): Rule(Action.UNDELIVERED, "RejectedByGateway: SMS cannot reach them; call instead"),
    # -- DLR status (at-api.md §3); rank orders them so a late report never moves a message backwards ------
    (Kind.DLR, "Sent"): Rule(Action.IN_TRANSIT, "sent by AT's network", rank=10),
    (Kind.DLR, "Submitted"): Rule(Action.IN_TRANSIT, "submitted to the mobile network", rank=20),
    (Kind.DLR, "Buffered"): Rule(Action.IN_TRANSIT, "queued by the mobile network", rank=30),
    (Kind.DLR, "Expired"): Rule(Action.UNDELIVERED, "discarded by the telco", rank=40),
    (Kind.DLR, "AbsentSubscriber"): Rule(
        Action.UNDELIVERED, "phone off or out of coverage", rank=41, clears_on_reach=True
    ),
    (Kind.DLR, "Rejected"): Rule(Action.UNDELIVERED, "rejected by the mobile network", rank=42),
    (Kind.DLR, "Failed"): Rule(Action.UNDELIVERED, "could not be delivered", rank=43),
    # Success outranks every failure: a handset receipt is proof, whatever arrived before or after it.
    (Kind.DLR, "Success"): Rule(Action.DELIVERED, "delivered to the handset", rank=50),
    # -- DLR failureReason (at-api.md §3); refines a final failure ------------------------------------------
    (Kind.FAILURE, "InsufficientCredit"): Rule(Action.UNDELIVERED, "no airtime for a premium message"),
    (Kind.FAILURE, "InvalidLinkId"): Rule(Action.UNDELIVERED, "bad linkId for an on-demand service"),
    (Kind.FAILURE, "UserIsInactive"): Rule(Action.UNDELIVERED, "subscriber inactive on the network"),
    (Kind.FAILURE, "UserInBlackList"): Rule(Action.OPT_OUT, "the customer blacklisted this sender"),
    (Kind.FAILURE, "UserAccountSuspended"): Rule(Action.UNDELIVERED, "suspended by the network"),
    (Kind.FAILURE, "NotNetworkSubcriber"): Rule(Action.UNDELIVERED, "not on this network (AT's spelling)"),
    (Kind.FAILURE, "NotNetworkSubscriber"): Rule(Action.UNDELIVERED, "not on this network"),
    (Kind.FAILURE, "UserNotSubscribedToProduct"): Rule(Action.UNDELIVERED, "not subscribed to the product"),
    (Kind.FAILURE, "UserDoesNotExist"): Rule(Action.INVALID, "the number does not exist"),
    (Kind.FAILURE, "DeliveryFailure"): Rule(Action.UNDELIVERED, "catch-all delivery failure"),
    (Kind.FAILURE, "DoNotDisturbRejection"): Rule(Action.UNDELIVERED, "DND (Nigeria); a call may reach them"),
    # -- voice hangupCause (at-api.md §5.2) -------------------------------------------------------------------
    (Kind.HANGUP, "NORMAL_CLEARING"): Rule(Action.ANSWERED, "answered and ended normally"),
    (Kind.HANGUP, "NO_ANSWER"): Rule(Action.RETRY_LATER, "rang, not answered"),
    (Kind.HANGUP, "NO_USER_RESPONSE"): Rule(Action.RETRY_LATER, "no answer from the handset"),
    (Kind.HANGUP, "USER_BUSY"): Rule(Action.RETRY_LATER, "busy on another call"),
    (Kind.HANGUP, "SUBSCRIBER_ABSENT"): Rule(Action.RETRY_LATER, "phone off or unreachable"),
    (Kind.HANGUP, "NORMAL_TEMPORARY_FAILURE"): Rule(Action.RETRY_LATER, "transient network failure"),
    (Kind.HANGUP, "RECOVERY_ON_TIMER_EXPIRE"): Rule(Action.RETRY_LATER, "request timed out"),
    (Kind.HANGUP, "SERVICE_UNAVAILABLE"): Rule(Action.RETRY_LATER, "service unavailable"),
    (Kind.HANGUP, "CALL_REJECTED"): Rule(Action.UNREACHED, "the customer declined the call"),
    (Kind.HANGUP, "UNALLOCATED_NUMBER"): Rule(Action.INVALID, "the number does not exist"),
    (Kind.HANGUP, "USER_NOT_REGISTERED"): Rule(Action.INVALID, "SIP user not registered"),
    (Kind.HANGUP, "ORIGINATOR_CANCEL"): Rule(Action.UNREACHED, "caller hung up before pickup"),
    (Kind.HANGUP, "LOSE_RACE"): Rule(Action.UNREACHED, "another leg won"),
    (Kind.HANGUP, "UNSPECIFIED"): Rule(Action.UNREACHED, "AT could not get a cause"),
}
# fmt: on

#: What an unknown value means, per kind: never a change we cannot take back.
UNKNOWN_POLICY: dict[Kind, Rule] = {
    # An unknown statusCode: we cannot tell whether it went out, so it is not retried (no double send)
    # and the contact is left alone; the operator sees the code on the message.
    Kind.SEND: Rule(Action.REJECTED, "unknown send statusCode"),
    # An unknown DLR status moves nothing; the message stays where it was.
    Kind.DLR: Rule(Action.IN_TRANSIT, "unknown delivery status", rank=0),
    # A final failure with an unknown reason is still a failure: voice next cycle.
    Kind.FAILURE: Rule(Action.UNDELIVERED, "unknown failure reason"),
    # at-api.md §5.2: treat unknown hang-up causes as a failure.
    Kind.HANGUP: Rule(Action.UNREACHED, "unknown hang-up cause"),
}


#: Per kind, each table value by its own and its case-folded spelling: AT's words are matched without regard
#: to case (the seed's README posts `"status": "FAILED"`), and the table's spelling is the one stored.
_SPELLINGS: dict[Kind, dict[str, str]] = {kind: {} for kind in Kind}
for _kind, _value in POLICY:
    if _SPELLINGS[_kind].setdefault(_value.casefold(), _value) != _value:
        raise RuntimeError(f"two {_kind.value} values of POLICY differ only by case: {_value}")
    _SPELLINGS[_kind][_value] = _value


def canonical(kind: Kind, value: str | None) -> str | None:
    """`value` in the table's spelling when the table knows it in any case; otherwise as received (trimmed)."""
    if value is None:
        return None
    spellings = _SPELLINGS[kind]
    exact = spellings.get(value)  # what AT sends, nearly always: one lookup on the receiver's hot path
    if exact is not None:
        return exact
    text = value.strip()
    return spellings.get(text.casefold(), text)


def decide(kind: Kind, value: str | int | None) -> Rule:
    """The rule for one AT value; unknown values get the conservative rule and a warning."""
    key = canonical(kind, "" if value is None else str(value)) or ""
    rule = POLICY.get((kind, key))
    if rule is None:
        log.warning("unknown %s %r: %s", kind.value, key, UNKNOWN_POLICY[kind].action.value)
        return UNKNOWN_POLICY[kind]
    return rule


def dlr_rank(status: str) -> int:
    """Forward-only order of delivery statuses; unknown statuses rank 0 and so never move a message."""
    rule = POLICY.get((Kind.DLR, canonical(Kind.DLR, status) or ""))
    return rule.rank if rule else 0


def dlr_outcome(status: str, failure_reason: str | None) -> Action:
    """What a delivery report means for the contact: the status, refined by the reason on a failure."""
    action = decide(Kind.DLR, status).action
    if action is Action.UNDELIVERED and failure_reason:
        return decide(Kind.FAILURE, failure_reason).action
    return action


#: What a final delivery report does: every later report is ignored (ranks 40 and up).
FINAL_DLR_ACTIONS = frozenset({Action.DELIVERED, Action.UNDELIVERED})


def dlr_statuses(actions: frozenset[Action]) -> list[str]:
    """The table's DLR statuses whose action is one of `actions` (for SQL that applies the rule set-wise)."""
    return [status for status, rule in rules_of(Kind.DLR).items() if rule.action in actions]


def clears_on_reach(status: str | None, failure_reason: str | None) -> bool:
    """Whether an SMS that ended so (a DLR `status`, refined by its `failureReason` as in `dlr_outcome`) stops
    routing the contact to a call once the customer proves reachable after it. Unknown values: no."""
    kind, value = (Kind.FAILURE, failure_reason) if failure_reason else (Kind.DLR, status)
    rule = POLICY.get((kind, canonical(kind, value) or ""))
    return rule is not None and rule.clears_on_reach


def values_clearing_on_reach(kind: Kind) -> list[str]:
    """The table's values of `kind` that `clears_on_reach` (for SQL that applies the rule set-wise)."""
    return [value for value, rule in rules_of(kind).items() if rule.clears_on_reach]


def rules_of(kind: Kind) -> dict[str, Rule]:
    return {value: rule for (k, value), rule in POLICY.items() if k is kind}
