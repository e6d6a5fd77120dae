"""Delivers queued notifications to Telegram: renders each in its reader's language and maps
Telegram's answers to the dispatcher's outcomes (bot.services.notifications).

``VIEWS`` is the one registry of how each kind reads: the flows' ``NOTICE_VIEWS`` lists, put
together here (a kind with two views fails at import; tests/unit/test_notices.py checks
that every kind the services queue has its view).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from telegram import Bot
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from bot.i18n import Translations
from bot.services.esims import CodeUnavailable, EsimService
from bot.services.notices import NoticeError
from bot.services.notifications import (
    Delivered,
    Delivery,
    Outgoing,
    Rejected,
    Throttled,
    Transient,
    Unreachable,
)
from bot.services.support import SupportService
from bot.services.users import UsersService
from handlers import (
    alerts,
    approvals,
    broadcast,
    esim,
    history,
    khqr,
    provider_notices,
    support,
    wallet,
)
from handlers.common import Ui, user_ui
from handlers.notification_views import NoticeView, QrView, Rendered, views_by_kind
from handlers.qr import qr_png

log = logging.getLogger(__name__)

VIEWS: dict[str, NoticeView[Any]] = views_by_kind(
    approvals.NOTICE_VIEWS, alerts.NOTICE_VIEWS, wallet.NOTICE_VIEWS,
    provider_notices.NOTICE_VIEWS, khqr.NOTICE_VIEWS, history.NOTICE_VIEWS,
    support.NOTICE_VIEWS, broadcast.NOTICE_VIEWS)
# Kinds sent as a QR code with a caption: an eSIM's install code, read when it is sent...
PHOTO_VIEWS: dict[str, esim.InstallCodeView] = {view.kind: view for view in esim.PHOTO_VIEWS}
# ... or a QR whose content the notice holds (a KHQR).
QR_VIEWS: dict[str, QrView[Any]] = {view.kind: view for view in khqr.QR_VIEWS}
# Kinds that show a stored support message: its text is read when it is sent.
TEXT_VIEWS: dict[str, support.SupportTextView[Any]] = {view.kind: view
                                                      for view in support.TEXT_VIEWS}
_KINDS = (VIEWS.keys(), PHOTO_VIEWS.keys(), QR_VIEWS.keys(), TEXT_VIEWS.keys())
if sum(len(kinds) for kinds in _KINDS) != len(set().union(*_KINDS)):
    raise ValueError("a notification kind has two views")

# BadRequest texts that mean the chat is gone for us, not that the message was wrong.
_GONE = ("chat not found", "user is deactivated", "bot was kicked", "have no rights")


def render(kind: str, ui: Ui, params: Mapping[str, Any]) -> Rendered:
    """The text and buttons of a queued notification: KeyError for a kind without a view,
    NoticeError for params that are not a notice of their kind."""
    return VIEWS[kind].render_params(ui, params)


def _seconds(error: RetryAfter) -> float:
    # PTB 22 warns that retry_after becomes a timedelta in its next major version: both work.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        retry_after: float | timedelta = error.retry_after
    return (retry_after.total_seconds() if isinstance(retry_after, timedelta)
            else float(retry_after))


class TelegramDeliverer:
    """The dispatcher's ``Deliverer``: one message, sent or edited in place."""

    def __init__(self, bot: Bot, users: UsersService, i18n: Translations,
                 esims: EsimService | None = None,
                 support_service: SupportService | None = None) -> None:
        self._bot = bot
        self._users = users
        self._i18n = i18n
        self._esims = esims
        self._support = support_service

    async def __call__(self, message: Outgoing) -> Delivery:
        if message.kind in PHOTO_VIEWS:
            return await self._photo(PHOTO_VIEWS[message.kind], message)
        if message.kind in QR_VIEWS:
            return await self._qr(QR_VIEWS[message.kind], message)
        if message.kind in TEXT_VIEWS:
            return await self._support_text(TEXT_VIEWS[message.kind], message)
        view = VIEWS.get(message.kind)
        if view is None:
            return Rejected(f"no view for kind {message.kind!r}")
        # An admin chat reads in the admin's own language when they use the bot, else English.
        ui = await user_ui(self._users, self._i18n, message.chat_id, None)
        try:
            text, markup = view.render_params(ui, message.params)
        except NoticeError as error:  # it will never read: sending it again would not help
            return Rejected(f"unreadable params: {error}")

        async def send() -> Delivery:
            if message.replaces_message_id is not None:
                try:
                    if view.edits_caption:
                        await self._bot.edit_message_caption(
                            chat_id=message.chat_id, message_id=message.replaces_message_id,
                            caption=text, reply_markup=markup)
                    else:
                        await self._bot.edit_message_text(
                            text, chat_id=message.chat_id,
                            message_id=message.replaces_message_id, reply_markup=markup)
                    return Delivered(message.replaces_message_id)
                except BadRequest as exc:
                    if "not modified" in exc.message.lower():
                        return Delivered(message.replaces_message_id)
                    # Deleted or too old to edit: the news goes out as a new message.
                    log.info("Could not edit message %s (%s); sending a new one",
                             message.replaces_message_id, exc.message)
            sent = await self._bot.send_message(message.chat_id, text, reply_markup=markup)
            return Delivered(sent.message_id)

        return await _answered(send)

    async def _photo(self, view: esim.InstallCodeView, message: Outgoing) -> Delivery:
        """A QR code with its caption (a new message: a photo does not replace a text)."""
        try:
            notice = view.notice.from_params(message.params)
        except NoticeError as error:
            return Rejected(f"unreadable params: {error}")
        if self._esims is None:
            return Rejected("no eSIM service to read the install code from")
        try:
            card = await self._esims.code_to_deliver(notice.line_id)
        except CodeUnavailable as error:  # the provider, not the message: try again later
            return Transient(str(error)) if error.transient else Rejected(str(error))
        ui = await user_ui(self._users, self._i18n, message.chat_id, None)
        caption, markup = view.render(ui, notice, card)

        async def send() -> Delivery:
            sent = await self._bot.send_photo(
                message.chat_id, qr_png(card.activation_code), caption=caption,
                parse_mode="HTML", reply_markup=markup)
            return Delivered(sent.message_id)

        return await _answered(send)


    async def _qr(self, view: QrView[Any], message: Outgoing) -> Delivery:
        """A QR code made from the notice, with its caption (HTML) and buttons."""
        try:
            notice = view.notice.from_params(message.params)
        except NoticeError as error:
            return Rejected(f"unreadable params: {error}")
        ui = await user_ui(self._users, self._i18n, message.chat_id, None)
        content, caption, markup = view.render(ui, notice)

        async def send() -> Delivery:
            sent = await self._bot.send_photo(message.chat_id, qr_png(content), caption=caption,
                                              parse_mode="HTML", reply_markup=markup)
            return Delivered(sent.message_id)

        return await _answered(send)

    async def _support_text(self, view: support.SupportTextView[Any],
                            message: Outgoing) -> Delivery:
        """A support message with the stored text it shows (the outbox holds no text)."""
        try:
            notice = view.notice.from_params(message.params)
        except NoticeError as error:
            return Rejected(f"unreadable params: {error}")
        if self._support is None:
            return Rejected("no support service to read the message from")
        text = await self._support.message_text(notice.support_message_id)
        if text is None:
            return Rejected(f"support message {notice.support_message_id} is not stored")
        ui = await user_ui(self._users, self._i18n, message.chat_id, None)
        body, markup = view.render(ui, notice, text)

        async def send() -> Delivery:
            sent = await self._bot.send_message(message.chat_id, body, reply_markup=markup)
            return Delivered(sent.message_id)

        return await _answered(send)


async def _answered(send: Callable[[], Awaitable[Delivery]]) -> Delivery:
    """What Telegram's answer to ``send`` means for the dispatcher."""
    try:
        return await send()
    except RetryAfter as exc:
        return Throttled(_seconds(exc))
    except Forbidden as exc:
        return Unreachable(exc.message)
    except BadRequest as exc:
        if any(gone in exc.message.lower() for gone in _GONE):
            return Unreachable(exc.message)
        return Rejected(exc.message)
    except TelegramError as exc:  # TimedOut, NetworkError, server errors
        return Transient(f"{type(exc).__name__}: {exc.message}")
