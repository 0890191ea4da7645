"""monitor.notify.telegram: python-telegram-bot's Bot against the Bot API double on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from botapi import TOKEN, BotAPIDouble

from monitor.core.ratelimit import RateLimiter
from monitor.core.telegram_html import digest_html
from monitor.errors import (
    CredentialsRejectedError,
    DeliveryError,
    RateLimitedError,
    RecipientGoneError,
    RecipientMovedError,
)
from monitor.model import Alert, Hit
from monitor.notify import Notifier
from monitor.notify.telegram import REDACTED, TelegramNotifier, TokenFilter

CHAT = 4242
OTHER = 5151
HOSTILE = '</b><a href="tg://x">x</a> <script>1</script> &lt; & <b>'


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _alert(recipient: int = CHAT, **fields: Any) -> Alert:
    values: dict[str, Any] = {
        "id": 1,
        "watchlist": "taiwan-red-line",
        "channel": "analysts",
        "recipient": str(recipient),
        "title": "Taiwan is the first red line",
        "body": "Wang Yi said Taiwan is the first red line for China.",
        "link": "https://example.org/a",
        "source": "aawsat",
        "published": datetime(2023, 9, 18, 10, 0, tzinfo=UTC),
        "hits": (Hit("taiwan", "body", 13, 19),),
        "other_sources": (),
    }
    values.update(fields)
    return Alert(**values)


def _notifier(double: BotAPIDouble, **kwargs: Any) -> TelegramNotifier:
    return TelegramNotifier(TOKEN, double.api_url, **kwargs)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_an_alert_arrives_as_html_without_link_preview(double: BotAPIDouble) -> None:
    async def go() -> None:
        notifier: Notifier = _notifier(double)
        try:
            await notifier.send(_alert())
        finally:
            await notifier.close()

    run(go())
    [message] = double.messages
    assert message.chat_id == CHAT and message.parse_mode == "HTML"
    assert message.bold == ["taiwan-red-line", "Taiwan"]
    assert message.links == [("Taiwan is the first red line", "https://example.org/a")]
    assert message.params["link_preview_options"] == {"is_disabled": True}


def test_fault_10_a_hostile_title_arrives_as_literal_text(double: BotAPIDouble) -> None:
    async def go() -> None:
        notifier = _notifier(double)
        try:
            await notifier.send(_alert(title=HOSTILE, link="javascript:alert(1)"))
        finally:
            await notifier.close()

    run(go())
    [message] = double.messages
    assert message.parse_mode == "HTML"  # accepted as HTML, no fallback needed
    assert message.plain.splitlines()[1] == HOSTILE.strip()
    assert message.links == []


def test_a_10000_character_arabic_article_arrives_with_the_hits_bold(double: BotAPIDouble) -> None:
    filler = "قال المتحدث إن الاجتماع تناول قضايا التعاون الاقتصادي. " * 90
    body = filler + "وأكد الوزير أن تايوان هي أول خط أحمر. " + filler
    body = body[:10_000]
    start = body.index("تايوان")
    line = body.index("خط أحمر")
    hits = (Hit("تايوان", "body", start, start + 6), Hit("خط أحمر", "body", line, line + 7))

    async def go() -> None:
        notifier = _notifier(double)
        try:
            await notifier.send(_alert(title="الصين وتايوان", body=body, hits=hits))
        finally:
            await notifier.close()

    run(go())
    [message] = double.messages
    assert len(message.plain) <= 4096
    assert message.bold[1:] == ["تايوان", "خط أحمر"]


def test_fault_45_retry_after_is_honoured_exactly_and_holds_only_that_chat(
    double: BotAPIDouble,
) -> None:
    clock = Clock()
    double.fail(CHAT, "retry_after", retry_after=30)

    async def go() -> None:
        notifier = _notifier(double, clock=clock)
        try:
            with pytest.raises(RateLimitedError) as raised:
                await notifier.send(_alert())
            assert raised.value.retry_after == 30.0
            assert not raised.value.permanent
            assert notifier.limiter.held_until(CHAT) == 1030.0
            # Held: the next attempt does not even reach Telegram, and says how long is left.
            clock.now += 10
            before = len(double.attempts)
            with pytest.raises(RateLimitedError) as again:
                await notifier.send(_alert())
            assert again.value.retry_after == pytest.approx(20.0)
            assert len(double.attempts) == before
            await notifier.send(_alert(OTHER))  # other chats are not held
            clock.now += 20
            await notifier.send(_alert())  # exactly retry_after later it goes, once
        finally:
            await notifier.close()

    run(go())
    assert [m.chat_id for m in double.messages] == [OTHER, CHAT]
    assert [(a.chat_id, a.status) for a in double.attempts] == [
        (CHAT, 429),
        (OTHER, 200),
        (CHAT, 200),
    ]


def test_fault_46_a_blocked_user_is_gone_and_the_others_unaffected(double: BotAPIDouble) -> None:
    double.fail(CHAT, "blocked", times=None)

    async def go() -> None:
        notifier = _notifier(double)
        try:
            with pytest.raises(RecipientGoneError) as raised:
                await notifier.send(_alert())
            assert raised.value.permanent
            assert raised.value.recipient == str(CHAT)
            assert "blocked by the user" in raised.value.reason
            await notifier.send(_alert(OTHER))
        finally:
            await notifier.close()

    run(go())
    assert [m.chat_id for m in double.messages] == [OTHER]


def test_a_kicked_bot_and_a_missing_chat_are_gone_too(double: BotAPIDouble) -> None:
    double.fail(-100, "kicked")
    double.fail(CHAT, "bad_request", description="Bad Request: chat not found")

    async def go() -> None:
        notifier = _notifier(double)
        try:
            with pytest.raises(RecipientGoneError, match="kicked"):
                await notifier.send(_alert(-100))
            with pytest.raises(RecipientGoneError, match=r"(?i)chat not found"):
                await notifier.send(_alert(CHAT))
        finally:
            await notifier.close()

    run(go())
    assert double.messages == []


def test_fault_49_a_migrated_chat_reports_its_new_id(double: BotAPIDouble) -> None:
    double.fail(-4001, "migrated", migrate_to=-1009876543210)

    async def go() -> None:
        notifier = _notifier(double)
        try:
            with pytest.raises(RecipientMovedError) as raised:
                await notifier.send(_alert(-4001))
            assert raised.value.recipient == "-4001"
            assert raised.value.new_recipient == "-1009876543210"
            assert not raised.value.permanent and raised.value.retry_after == 0.0
            await notifier.send(_alert(-1009876543210))  # the outbox resends there
        finally:
            await notifier.close()

    run(go())
    assert [m.chat_id for m in double.messages] == [-1009876543210]


def test_fault_47_html_refused_is_retried_once_as_plain_text(double: BotAPIDouble) -> None:
    double.fail(CHAT, "cant_parse")

    async def go() -> None:
        notifier = _notifier(double)
        try:
            await notifier.send(_alert(title="Title <&>"))
        finally:
            await notifier.close()

    run(go())
    [message] = double.messages
    assert message.parse_mode is None
    assert message.text.splitlines()[:2] == [
        "[taiwan-red-line] Title <&>",
        "aawsat · 2023-09-18 10:00 UTC · https://example.org/a",
    ]
    assert [a.status for a in double.attempts] == [400, 200]


def test_fault_47_refused_twice_gives_up_with_the_reason_never_retrying_forever(
    double: BotAPIDouble,
) -> None:
    double.fail(CHAT, "bad_request", times=None, description="Bad Request: message is too weird")

    async def go() -> None:
        notifier = _notifier(double)
        try:
            with pytest.raises(DeliveryError) as raised:
                await notifier.send(_alert())
        finally:
            await notifier.close()
        assert raised.value.permanent
        assert raised.value.reason == (
            "Telegram refused the message: Message is too weird; "
            "as plain text too: Message is too weird"
        )

    run(go())
    assert len(double.attempts) == 2


def test_fault_50_a_timeout_is_temporary_and_called_ambiguous(
    double: BotAPIDouble, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        notifier = _notifier(double, timeout=1.0)
        try:
            # A message first, so that the one that hangs goes out on an open connection: on a
            # busy machine, connecting can outlast a short timeout, and that one is no ambiguity.
            await notifier.send(_alert())
            double.fail(CHAT, "hang")
            with pytest.raises(DeliveryError) as raised:
                await notifier.send(_alert())
            assert not raised.value.permanent
            assert "may have been delivered" in raised.value.reason
        finally:
            await notifier.close()

    with caplog.at_level(logging.WARNING, "monitor"):
        run(go())
    assert "telegram.timeout" in caplog.text and "ambiguous=true" in caplog.text


def test_fault_51_server_errors_and_an_unreachable_api_are_temporary(double: BotAPIDouble) -> None:
    double.fail(CHAT, "server_error")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]

    async def go() -> None:
        notifier = _notifier(double)
        nowhere = TelegramNotifier(TOKEN, f"http://127.0.0.1:{closed_port}", timeout=2)
        try:
            with pytest.raises(DeliveryError) as bad_gateway:
                await notifier.send(_alert())
            assert not bad_gateway.value.permanent
            with pytest.raises(DeliveryError) as unreachable:
                await nowhere.send(_alert())
            assert not unreachable.value.permanent
            assert unreachable.value.reason.startswith("cannot reach Telegram")
        finally:
            await notifier.close()
            await nowhere.close()

    run(go())


def test_a_wrong_token_is_permanent_stops_the_notifier_and_is_never_named(
    double: BotAPIDouble,
) -> None:
    wrong = "987654321:AAwrong-token_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"

    async def go() -> None:
        notifier = TelegramNotifier(wrong, double.api_url)
        try:
            with pytest.raises(CredentialsRejectedError) as send_error:
                await notifier.send(_alert())
            with pytest.raises(CredentialsRejectedError) as again:
                await notifier.send(_alert())
            with pytest.raises(CredentialsRejectedError) as check_error:
                await notifier.check()
        finally:
            await notifier.close()
        for error in (send_error.value, again.value, check_error.value):
            assert error.permanent
            assert wrong not in error.reason
            assert "rejected the bot token" in error.reason
        assert notifier.stopped is not None

    run(go())
    assert len(double.calls_of("sendMessage")) == 1  # the second send did not ask Telegram


def test_check_names_the_bot(double: BotAPIDouble) -> None:
    async def go() -> str:
        notifier = _notifier(double)
        try:
            return await notifier.check()
        finally:
            await notifier.close()

    assert run(go()) == "monitor_test_bot"


def test_messages_to_one_chat_are_spaced_by_the_limiter(double: BotAPIDouble) -> None:
    async def go() -> None:
        notifier = _notifier(double, limiter=RateLimiter(chat_interval=0.25))
        try:
            await asyncio.gather(*(notifier.send(_alert(id=i)) for i in range(4)))
            await notifier.send(_alert(OTHER))
        finally:
            await notifier.close()

    run(go())
    times = [m.at for m in double.messages_to(CHAT)]
    assert len(times) == 4
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times))


class RecordingLimiter(RateLimiter):
    """The real limiter, keeping every wait it hands out."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def reserve(self, chat_id: int, now: float) -> float:
        wait = super().reserve(chat_id, now)
        self.waits.append(wait)
        return wait


def test_bulk_sends_provoke_no_flood_control(double: BotAPIDouble) -> None:
    double.enforce_limits(tolerance=0.2)  # arrival jitter on a loaded machine
    limiter = RecordingLimiter()

    async def go() -> None:
        notifier = _notifier(double, limiter=limiter)
        try:
            await asyncio.gather(*(notifier.send(_alert(chat)) for chat in range(1, 46)))
        finally:
            await notifier.close()

    run(go())
    assert len(double.messages) == 45
    assert all(a.status == 200 for a in double.attempts)
    arrivals = sorted(m.at for m in double.messages)
    assert all(arrivals[i + 30] - arrivals[i] >= 0.8 for i in range(len(arrivals) - 30))
    # No more waiting than 30 messages a second asks: the 45th waits less than 45/30 s (the
    # waits the limiter handed out, not the wall clock, which a busy machine stretches).
    assert len(limiter.waits) == 45
    assert max(limiter.waits) < 45 / 30


def test_a_digest_goes_as_several_valid_messages(double: BotAPIDouble) -> None:
    alerts = [_alert(id=i, title=f"Story {i} <b>", body="Taiwan " * 200) for i in range(150)]

    async def go() -> int:
        notifier = _notifier(double, limiter=RateLimiter(chat_interval=0.01))
        try:
            return await notifier.send_digest(str(CHAT), alerts, "Hourly digest")
        finally:
            await notifier.close()

    sent = run(go())
    assert sent == len(digest_html(alerts, "Hourly digest")) > 1
    assert len(double.messages) == sent
    assert all(m.parse_mode == "HTML" for m in double.messages)


def test_a_recipient_that_is_not_a_chat_id_is_a_permanent_error(double: BotAPIDouble) -> None:
    async def go() -> None:
        notifier = _notifier(double)
        try:
            with pytest.raises(DeliveryError) as raised:
                await notifier.send(_alert().__class__(**{**_alert().__dict__, "recipient": "x"}))
            assert raised.value.permanent
        finally:
            await notifier.close()

    run(go())


# ---- the token never reaches a log ------------------------------------------------------------


def test_fault_43_the_token_never_appears_in_logs(
    double: BotAPIDouble, caplog: pytest.LogCaptureFixture
) -> None:
    double.fail(CHAT, "blocked")
    double.fail(OTHER, "hang")

    async def go() -> None:
        notifier = _notifier(double, timeout=0.3)
        try:
            await notifier.send(_alert(-77))
            for chat in (CHAT, OTHER):
                with pytest.raises(DeliveryError):
                    await notifier.send(_alert(chat))
        finally:
            await notifier.close()

    with caplog.at_level(logging.DEBUG):
        run(go())
    assert "HTTP Request: POST" in caplog.text  # httpx logged the URLs …
    assert f"/bot{REDACTED}/sendMessage" in caplog.text  # … with the token redacted
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()


def test_the_filter_redacts_arguments_tracebacks_and_stacks() -> None:
    token_filter = TokenFilter(TOKEN)
    logger = logging.getLogger("test.redaction")
    try:
        raise RuntimeError(f"failed at https://api.example/bot{TOKEN}/getMe")
    except RuntimeError as exc:
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            1,
            "call %s failed: %r",
            (f"/bot{TOKEN}/x", {"token": TOKEN.replace(":", "%3A")}),
            (type(exc), exc, exc.__traceback__),
            sinfo=f"stack with {TOKEN}",
        )
    assert token_filter.filter(record)
    formatted = logging.Formatter().format(record)
    assert TOKEN not in formatted and TOKEN.replace(":", "%3A") not in formatted
    assert formatted.count(REDACTED) >= 4
