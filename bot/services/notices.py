"""Notifications as typed values: one frozen dataclass per kind, shared by the service that
queues it and the renderer that shows it, so mypy checks both ends.

The outbox stores a kind and plain JSON params. ``Notice.to_params`` and
``Notice.from_params`` map a notice to and from those params once, generically over its
dataclass fields, in the key shapes the outbox has always held (rows already queued decode
without a migration):

* a field is stored under its name, or the key ``stored(key)`` gives it;
* Money is two keys, ``money_keys(minor, currency)``; several Money fields may share one
  currency key (``currency`` for an amount, a cap and what was spent), which then must agree;
* datetimes are ISO strings, enums their values; ints, strings, bools and None as they are;
* a ``NoticePart`` field (a group of fields, such as what a charge buys) is stored flat among
  the notice's keys; a part that is None stores no keys at all;
* ``omit_none`` leaves a None field out instead of storing null (keys only some notices of a
  kind carry, such as the admin copy's user id).

Keys are given as ``field(metadata=money_keys(...))``, not by a helper that calls
``field()``: mypy takes such a call for a default and would stop checking that a required
field is given.

Decoding ignores keys it does not know (``REPLACES``, written next to a notice). A missing
or null key is None (or the field's default) where the field allows it; anything else that
does not fit raises NoticeError, and the deliverer rejects the message.

This module stays free of Telegram and storage: handlers import it.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self, TypeVar

from bot.domain.money import Money, MoneyError

REPLACES = "replaces"  # a param: the dedupe key of the message this one edits in place
_METADATA = "stored"
_T = TypeVar("_T")


class NoticeError(ValueError):
    """Stored params that are not a notice of their kind (a key missing or of a wrong type),
    or a notice that cannot be stored (two Money fields disagree on a shared currency)."""


class Audience(enum.StrEnum):
    """Whom a copy of a notice is for: its user, or an admin chat."""

    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class _Stored:
    key: str | None = None  # the stored key when it is not the field's name; Money: its minor
    currency: str | None = None  # Money: the key of its currency (may be shared)
    omit_none: bool = False  # None is left out rather than stored as null


def stored(key: str | None = None, *, omit_none: bool = False) -> Mapping[str, Any]:
    """Field metadata: the stored key of a field (default: its name)."""
    return {_METADATA: _Stored(key=key, omit_none=omit_none)}


def money_keys(minor: str, currency: str, *, omit_none: bool = False) -> Mapping[str, Any]:
    """Field metadata of a Money field: the keys of its minor units and its currency."""
    return {_METADATA: _Stored(key=minor, currency=currency, omit_none=omit_none)}


class NoticePart:
    """Base of a group of fields (a frozen dataclass) that a notice stores flat among its own
    keys."""


class Notice:
    """Base of a notification kind: a frozen dataclass with its ``KIND``."""

    KIND: ClassVar[str]

    def to_params(self) -> dict[str, Any]:
        """The plain params the outbox stores."""
        params: dict[str, Any] = {}
        _encode(self, params)
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Self:
        """The notice the outbox params hold; NoticeError when they do not fit."""
        try:
            return _decode(cls, params)
        except NoticeError as error:
            raise NoticeError(f"{cls.KIND}: {error}") from None


def kinds(*notices: type[Notice]) -> dict[str, type[Notice]]:
    """Notice types by kind; ValueError when two share a kind."""
    found: dict[str, type[Notice]] = {}
    for notice in notices:
        if notice.KIND in found:
            raise ValueError(f"notice kind {notice.KIND!r} is both {found[notice.KIND].__name__}"
                             f" and {notice.__name__}")
        found[notice.KIND] = notice
    return found


class Outbox(Protocol):
    """Where notices are queued (storage.notifications.NotificationsRepository)."""

    async def enqueue(self, *, user_id: int, chat_id: int, dedupe_key: str, kind: str,
                      params: dict[str, Any], now: datetime,
                      send_at: datetime | None = None) -> bool: ...


async def queue(outbox: Outbox, notice: Notice, *, user_id: int, chat_id: int,
                dedupe_key: str, now: datetime, send_at: datetime | None = None,
                replaces: str | None = None) -> bool:
    """Queues one notice (see ``NotificationsRepository.enqueue``: inside the transaction of
    the change it reports); False when ``dedupe_key`` was queued before. ``replaces``: the
    dedupe key of an earlier message that this one edits in place."""
    params = notice.to_params()
    if replaces is not None:
        params[REPLACES] = replaces
    return await outbox.enqueue(user_id=user_id, chat_id=chat_id, dedupe_key=dedupe_key,
                                kind=notice.KIND, params=params, now=now, send_at=send_at)


# --- the codec ----------------------------------------------------------------------------

_SCALARS: tuple[type, ...] = (bool, int, str, datetime, Money)


@dataclass(frozen=True)
class _Slot:
    """How one field is stored."""

    name: str
    key: str  # unused by a part
    kind: type  # the field's type without None: a scalar, an Enum or a NoticePart
    optional: bool  # None is a value of the field
    default: Any  # dataclasses.MISSING when there is none
    currency: str | None
    omit_none: bool


_LAYOUTS: dict[type, tuple[_Slot, ...]] = {}


def _layout(cls: type) -> tuple[_Slot, ...]:
    """The slots of a notice or part type, worked out and checked once: supported types
    only, Money with its keys, and (for a notice) no key stored twice but a shared currency
    key."""
    if cls not in _LAYOUTS:
        _LAYOUTS[cls] = _slots(cls)
    return _LAYOUTS[cls]


def _slots(cls: type) -> tuple[_Slot, ...]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    hints = typing.get_type_hints(cls)
    slots = []
    for field in dataclasses.fields(cls):
        kind, optional = _unwrap(hints[field.name])
        meta: _Stored = field.metadata.get(_METADATA, _Stored())
        if not (kind in _SCALARS or issubclass(kind, enum.Enum | NoticePart)):
            raise TypeError(f"{cls.__name__}.{field.name}: {kind.__name__} cannot be stored")
        if (kind is Money) != (meta.currency is not None):
            raise TypeError(f"{cls.__name__}.{field.name}: Money, and only Money, is stored "
                            "with money_keys()")
        default = (field.default if field.default is not dataclasses.MISSING
                   else None if optional else dataclasses.MISSING)
        slots.append(_Slot(field.name, meta.key or field.name, kind, optional, default,
                           meta.currency, meta.omit_none))
    if issubclass(cls, Notice):
        _check_keys(cls.__name__, slots)
    return tuple(slots)


def _unwrap(hint: Any) -> tuple[type, bool]:
    """The type a field holds, and whether None is allowed."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)] if optional \
        else [hint]
    if len(args) != 1 or not isinstance(args[0], type):
        raise TypeError(f"{hint} is not one type, or one type or None")
    return args[0], optional


def _keys(slots: Sequence[_Slot]) -> tuple[list[str], set[str]]:
    """The keys some slots store (a part's flattened), and their currency keys (which may
    repeat)."""
    plain: list[str] = []
    currencies: set[str] = set()
    for slot in slots:
        if issubclass(slot.kind, NoticePart):
            inner, inner_currencies = _keys(_layout(slot.kind))
            plain += inner
            currencies |= inner_currencies
        else:
            plain.append(slot.key)
            if slot.currency is not None:
                currencies.add(slot.currency)
    return plain, currencies


def _check_keys(name: str, slots: Sequence[_Slot]) -> None:
    plain, currencies = _keys(slots)
    clashes = {key for key in plain if plain.count(key) > 1} | (set(plain) & currencies)
    if REPLACES in plain or REPLACES in currencies:  # queue() writes it
        clashes.add(REPLACES)
    if clashes:
        raise TypeError(f"{name} stores {sorted(clashes)} twice")


def _encode(value: object, params: dict[str, Any]) -> None:
    for slot in _layout(type(value)):
        field = getattr(value, slot.name)
        if issubclass(slot.kind, NoticePart):
            if field is not None:
                _encode(field, params)
        elif field is None:
            if not slot.omit_none:
                params[slot.key] = None
                if slot.currency is not None:
                    params.setdefault(slot.currency, None)
        elif isinstance(field, Money) and slot.currency is not None:  # (_slots checks it)
            if params.get(slot.currency) not in (None, field.currency):
                raise NoticeError(f"{slot.name} is in {field.currency}, but "
                                  f"{slot.currency} is {params[slot.currency]}")
            params[slot.key] = field.minor
            params[slot.currency] = field.currency
        elif isinstance(field, datetime):
            params[slot.key] = field.isoformat()
        elif isinstance(field, enum.Enum):
            params[slot.key] = field.value
        else:
            params[slot.key] = field


def _decode(cls: type[_T], params: Mapping[str, Any]) -> _T:
    values: dict[str, Any] = {}
    for slot in _layout(cls):
        if issubclass(slot.kind, NoticePart):
            values[slot.name] = (_decode(slot.kind, params)
                                 if not slot.optional or _present(slot.kind, params) else None)
            continue
        raw = params.get(slot.key)
        if raw is None:
            if slot.default is dataclasses.MISSING:
                raise NoticeError(f"{slot.key} is missing")
            values[slot.name] = slot.default
        else:
            values[slot.name] = _value(slot, raw, params)
    return cls(**values)


def _present(part: type, params: Mapping[str, Any]) -> bool:
    """Whether an optional part was stored: one of its own keys holds a value (a currency
    key may be shared with the notice, so it does not count)."""
    plain, _currencies = _keys(_layout(part))
    return any(params.get(key) is not None for key in plain)


def _value(slot: _Slot, raw: Any, params: Mapping[str, Any]) -> Any:
    kind = slot.kind
    if kind is Money:
        currency = params.get(slot.currency) if slot.currency is not None else None
        if _is_int(raw) and isinstance(currency, str):
            try:
                return Money(raw, currency)
            except MoneyError:
                pass
        raise NoticeError(f"{slot.key}/{slot.currency}: {raw!r} {currency!r} is no amount")
    if kind is datetime:
        if isinstance(raw, str):
            try:
                return datetime.fromisoformat(raw)
            except ValueError:
                pass
        raise NoticeError(f"{slot.key}: {raw!r} is no time")
    if issubclass(kind, enum.Enum):
        try:
            return kind(raw)
        except ValueError:
            raise NoticeError(f"{slot.key}: {raw!r} is no {kind.__name__}") from None
    if (kind is int and not _is_int(raw)) or not isinstance(raw, kind):
        raise NoticeError(f"{slot.key}: {raw!r} is no {kind.__name__}")
    return raw


def _is_int(raw: object) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool)
