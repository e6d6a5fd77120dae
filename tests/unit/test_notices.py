"""Typed notices (bot/services/notices.py) and their views (handlers/outbox.py VIEWS):

* every kind the services queue has exactly one view, and every view a queued kind;
* each kind goes to plain params and back unchanged, through JSON as the outbox keeps them;
* the stored shapes did not move: params exactly as the code before typed notices queued
  them (tests/unit/stored_notices.json) decode, store again as the same dict, and render to
  the same text and buttons as that code rendered them;
* params that do not fit their kind raise NoticeError, and the codec refuses a layout that
  would store a key twice.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.money import CURRENCIES, Money
from bot.i18n import Translations
from bot.services.charging import ApprovalReason, ApprovalRequest, ChargeFacts, ChargeFailed
from bot.services.notice_kinds import NOTICE_KINDS
from bot.services.notices import (
    REPLACES,
    Audience,
    Notice,
    NoticeError,
    kinds,
    money_keys,
    queue,
    stored,
)
from handlers.common import Ui
from handlers.notification_views import views_by_kind
from handlers.outbox import PHOTO_VIEWS, QR_VIEWS, TEXT_VIEWS, VIEWS, render

STORED = json.loads((Path(__file__).with_name("stored_notices.json")).read_text("utf-8"))
I18N = Translations()


def through_json(params: dict[str, Any]) -> dict[str, Any]:
    """As the outbox hands params back."""
    return dict(json.loads(json.dumps(params)))


# --- one registry -------------------------------------------------------------------------


def test_every_queued_kind_has_exactly_one_view_and_every_view_a_kind() -> None:
    shown = {kind: view.notice for kind, view in
             {**VIEWS, **PHOTO_VIEWS, **QR_VIEWS, **TEXT_VIEWS}.items()}
    assert shown == NOTICE_KINDS
    assert all(kind == notice.KIND for kind, notice in NOTICE_KINDS.items())


def test_two_notices_of_one_kind_or_two_views_of_one_kind_are_refused() -> None:
    receipt = NOTICE_KINDS["receipt"]
    with pytest.raises(ValueError, match="'receipt'"):
        kinds(receipt, NOTICE_KINDS["charge_failed"], receipt)
    view = VIEWS["receipt"]
    with pytest.raises(ValueError, match="'receipt' has two views"):
        views_by_kind([view], [VIEWS["charge_failed"], view])


def test_services_queue_notices_only_through_queue() -> None:
    """No service writes outbox params by hand: each goes through notices.queue()."""
    root = Path(__file__).resolve().parents[2]
    by_hand = [str(path.relative_to(root)) for folder in ("bot", "handlers")
               for path in sorted((root / folder).rglob("*.py"))
               if ".enqueue(" in path.read_text("utf-8")]
    assert by_hand == ["bot/services/notices.py"]


# --- to params and back -------------------------------------------------------------------

# All amounts of one example share a currency: notices keep several Money fields under one
# currency key (an amount and a cap; a balance and its threshold), which must agree.
_MONEY = st.builds(Money, minor=st.integers(),
                   currency=st.shared(st.sampled_from(sorted(CURRENCIES)), key="currency"))
_MOMENTS = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=7))]))


def _values(hint: Any) -> st.SearchStrategy[Any]:
    """Any value of a field's type, None too when the field allows it."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kind = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    values = (_MONEY if kind is Money else _MOMENTS if kind is datetime
              else _instances(kind) if dataclasses.is_dataclass(kind) else st.from_type(kind))
    return st.none() | values if optional else values


def _instances(cls: type) -> st.SearchStrategy[Any]:
    """Any notice or part of a notice: every field drawn, those with defaults too."""
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: _values(hints[f.name]) for f in dataclasses.fields(cls)})


@pytest.mark.parametrize("kind", sorted(NOTICE_KINDS))
@settings(max_examples=60)
@given(data=st.data())
def test_a_notice_comes_back_from_its_params_unchanged(kind: str, data: st.DataObject) -> None:
    notice = data.draw(_instances(NOTICE_KINDS[kind]))
    params = notice.to_params()
    assert REPLACES not in params
    assert type(notice).from_params(through_json(params)) == notice
    assert through_json(params) == params  # plain JSON values only


# --- the stored shapes --------------------------------------------------------------------


def _ui(language: str) -> Ui:
    return Ui.of(I18N, language, ZoneInfo(STORED["zone"]), datetime.fromisoformat(STORED["now"]))


def _buttons(markup: Any) -> list[list[str]]:
    if markup is None:
        return []
    return [[button.text, button.callback_data]
            for row in markup.inline_keyboard for button in row]


# Kinds first queued after the notices were typed: no row in an older shape can exist.
TYPED_FROM_THE_START = {"esim_ready", "khqr_issued", "khqr_closed", "khqr_receipt",
                        "khqr_amount_differs", "khqr_checks_refused", "monthly_summary",
                        "support_ticket", "support_user_message", "support_reply",
                        "support_resolved", "promotion", "broadcast_report"}


def test_the_stored_cases_cover_every_kind() -> None:
    assert {case["kind"] for case in STORED["cases"]} == set(NOTICE_KINDS) - TYPED_FROM_THE_START


@pytest.mark.parametrize("case", STORED["cases"],
                         ids=[f"{n}-{c['kind']}" for n, c in enumerate(STORED["cases"])])
def test_params_stored_before_typed_notices_decode_store_and_read_as_they_did(
        case: dict[str, Any]) -> None:
    kind, params = case["kind"], case["params"]
    notice = NOTICE_KINDS[kind].from_params(params)
    # The same keys and values again (REPLACES is queue()'s, next to the notice's params).
    assert notice.to_params() == {k: v for k, v in params.items() if k != REPLACES}
    for language, expected in case["rendered"].items():
        text, markup = render(kind, _ui(language), params)
        assert (text, _buttons(markup)) == (expected["text"], expected["buttons"])


# --- what does not fit --------------------------------------------------------------------

APPROVAL = next(case["params"] for case in STORED["cases"]
                if case["kind"] == "approval_request" and case["params"]["cap_minor"])


@pytest.mark.parametrize(("change", "complaint"), [
    ({"line": None}, "line is missing"),
    ({"wallet_minor": None}, "wallet_minor is missing"),
    ({"charge_id": "12"}, "charge_id: '12' is no int"),
    ({"charge_id": True}, "charge_id: True is no int"),
    ({"amount_minor": 5.0}, "amount_minor/currency: 5.0 'USD' is no amount"),
    ({"currency": "EUR"}, "amount_minor/currency: 500 'EUR' is no amount"),
    ({"reason": "because"}, "reason: 'because' is no ApprovalReason"),
    ({"expires_at": "tomorrow"}, "expires_at: 'tomorrow' is no time"),
    ({"product_kind": "sms"}, "product_kind: 'sms' is no ProductKind"),
])
def test_params_that_do_not_fit_raise_notice_error(change: dict[str, Any],
                                                   complaint: str) -> None:
    with pytest.raises(NoticeError) as raised:
        ApprovalRequest.from_params({**APPROVAL, **change})
    assert str(raised.value) == f"approval_request: {complaint}"


def test_missing_optional_keys_are_none_and_unknown_keys_are_ignored() -> None:
    required = {k: APPROVAL[k] for k in ("charge_id", "line", "amount_minor", "currency",
                                          "cause", "reason", "wallet_minor", "wallet_currency")}
    request = ApprovalRequest.from_params({**required, REPLACES: "x", "later": 1})
    assert (request.cap, request.spent, request.expires_at) == (None, None, None)
    assert request.charge.product_name is None and request.reason is ApprovalReason.OVER_CAP
    with pytest.raises(NoticeError, match="cause is missing"):
        ApprovalRequest.from_params({k: v for k, v in required.items() if k != "cause"})


def test_amounts_sharing_a_currency_key_must_agree() -> None:
    request = ApprovalRequest.from_params(APPROVAL)
    with pytest.raises(NoticeError, match="cap is in KHR"):
        dataclasses.replace(request, cap=Money(100, "KHR")).to_params()


def test_an_admin_copy_names_the_user_and_a_users_copy_stores_no_such_keys() -> None:
    facts = ApprovalRequest.from_params(APPROVAL).charge
    user = ChargeFailed(charge=facts, reason="declined", attempts=1, audience=Audience.USER)
    admin = dataclasses.replace(user, audience=Audience.ADMIN, user_id=7, reference="ref-1")
    assert {"user_id", "reference"} & set(user.to_params()) == set()
    assert (admin.to_params()["user_id"], admin.to_params()["audience"]) == (7, "admin")


@dataclass(frozen=True, kw_only=True)
class _Clashing(Notice):
    KIND: ClassVar[str] = "test_clashing"
    charge: ChargeFacts
    line: str  # ChargeFacts stores "line" already


@dataclass(frozen=True, kw_only=True)
class _CurrencyAsKey(Notice):
    KIND: ClassVar[str] = "test_currency_as_key"
    amount: Money = field(metadata=money_keys("amount_minor", "unit"))
    unit: str


@dataclass(frozen=True, kw_only=True)
class _Replacing(Notice):
    KIND: ClassVar[str] = "test_replacing"
    target: str = field(metadata=stored(REPLACES))


@dataclass(frozen=True, kw_only=True)
class _MoneyWithoutKeys(Notice):
    KIND: ClassVar[str] = "test_money_without_keys"
    amount: Money


@pytest.mark.parametrize(("notice", "problem"), [
    (_Clashing, r"stores \['line'\] twice"),
    (_CurrencyAsKey, r"stores \['unit'\] twice"),
    (_Replacing, r"stores \['replaces'\] twice"),
    (_MoneyWithoutKeys, "only Money, is stored with money_keys"),
])
def test_a_layout_that_cannot_be_stored_is_refused(notice: type[Notice], problem: str) -> None:
    with pytest.raises(TypeError, match=problem):
        notice.from_params({})


# --- queuing ------------------------------------------------------------------------------


@dataclass
class _Outbox:
    queued: list[dict[str, Any]] = field(default_factory=list)

    async def enqueue(self, **row: Any) -> bool:
        self.queued.append(row)
        return True


async def test_queue_writes_the_kind_its_params_and_what_it_replaces() -> None:
    outbox = _Outbox()
    request = ApprovalRequest.from_params(APPROVAL)
    now = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    assert await queue(outbox, request, user_id=1, chat_id=2, dedupe_key="k", now=now,
                       replaces="approval:1")
    [row] = outbox.queued
    assert row == {"user_id": 1, "chat_id": 2, "dedupe_key": "k", "kind": "approval_request",
                   "params": {**APPROVAL, REPLACES: "approval:1"}, "now": now,
                   "send_at": None}
