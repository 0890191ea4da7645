"""Email alerts: rendering (pure) and delivery through a real SMTP server on 127.0.0.1 (aiosmtpd).

Covers issue 4 item 4 and FAULTS 52, 64, 65: multipart text + HTML, RFC 2047 Arabic subjects that
decode back to the same text, header injection through a title, escaping, 4xx retried / 5xx given
up with the reason, a stalled server, TLS and AUTH failures as config problems, and the password
kept out of every error and log record.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from smtpserver import SMTPTestServer, StallingServer, TLSFiles, free_port

from monitor.core.email_render import (
    SUBJECT_CHARS,
    digest_groups,
    encoded_words,
    one_line,
    render_alert,
    render_digest,
)
from monitor.errors import DeliveryError
from monitor.model import Alert, Hit
from monitor.notify import Notifier
from monitor.notify.email import EmailNotifier

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "examples" / "articles" / "aawsat-wang-yi-russia.txt"
SENDER = "News monitor <monitor@example.org>"
RECIPIENT = "desk@example.org"
PASSWORD = "s3cret-Pa55word"
USER = "monitor"
RED_LINE = "خط أحمر"


def arabic_alert(**changes: Any) -> Alert:
    title, body = REFERENCE.read_text(encoding="utf-8").split("\n", 1)
    start = body.index(RED_LINE)
    fields: dict[str, Any] = {
        "id": 1,
        "watchlist": "taiwan-red-line",
        "channel": "desk",
        "recipient": RECIPIENT,
        "title": title.strip(),
        "body": body,
        "link": "https://aawsat.com/node/123?a=1&b=2",
        "source": "aawsat",
        "published": datetime(2023, 9, 18, 10, 0, tzinfo=UTC),
        "hits": (Hit(RED_LINE, "body", start, start + len(RED_LINE)),),
        "other_sources": ("bbc-arabic",),
    }
    return Alert(**(fields | changes))


def english_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "id": 2,
        "watchlist": "china-russia",
        "channel": "desk",
        "recipient": RECIPIENT,
        "title": "China and Russia talk",
        "body": "Officials from China met their counterparts from Russia on Monday.",
        "link": "https://example.org/story",
        "source": "sample",
        "published": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        "hits": (Hit("China", "body", 15, 20),),
    }
    return Alert(**(fields | changes))


def notifier(server: Any, **options: Any) -> EmailNotifier:
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "starttls": False,
        "sender": SENDER,
        "timeout": 5.0,
        "local_hostname": "client.test",
    }
    return EmailNotifier(**(settings | options))


def send(email_notifier: EmailNotifier, alert: Alert) -> None:
    async def go() -> None:
        try:
            await email_notifier.send(alert)
        finally:
            await email_notifier.close()  # the connection is kept for the next message till then

    asyncio.run(go())


def send_error(email_notifier: EmailNotifier, alert: Alert) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        send(email_notifier, alert)
    return caught.value


def parts(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML parts, with line ends as Python writes them (the wire has CRLF)."""
    plain = message.get_body(("plain",))
    rich = message.get_body(("html",))
    assert plain is not None and rich is not None
    texts = (cast(str, plain.get_content()), cast(str, rich.get_content()))
    return texts[0].replace("\r\n", "\n"), texts[1].replace("\r\n", "\n")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return TLSFiles.generate(tmp_path_factory.mktemp("tls"))


# ---- delivered over SMTP -----------------------------------------------------------------------


def test_notifier_satisfies_the_protocol(smtp: SMTPTestServer) -> None:
    channel: Notifier = notifier(smtp)
    asyncio.run(channel.close())


def test_message_arrives_multipart_with_text_and_html(smtp: SMTPTestServer) -> None:
    send(notifier(smtp), english_alert())
    [received] = smtp.messages
    assert received.rcpt_tos == (RECIPIENT,)
    assert received.mail_from == "monitor@example.org"
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    plain, rich = parts(message)
    assert plain.startswith("[china-russia] China and Russia talk\nsample · 2024-05-01 12:00 UTC")
    assert "*China*" in plain
    assert "<b>China</b>" in rich
    assert '<a href="https://example.org/story">China and Russia talk</a>' in rich
    assert message["From"] == SENDER and message["To"] == RECIPIENT
    assert message["Subject"] == "[china-russia] China and Russia talk"
    assert message["Date"] is not None and message["Message-ID"] is not None
    assert message["Auto-Submitted"] == "auto-generated"


def test_arabic_subject_is_rfc2047_and_decodes_to_the_same_text(smtp: SMTPTestServer) -> None:
    alert = arabic_alert()
    send(notifier(smtp), alert)
    [received] = smtp.messages
    head = received.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # every header on the wire is 7-bit
    assert b"Subject: =?utf-8?b?" in head
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    # The reference title has "الأميركي... وزير": a space that Python's own folder loses.
    assert received.message["Subject"] == f"[taiwan-red-line] {alert.title}"


def test_arabic_body_survives_with_the_hit_in_bold(smtp: SMTPTestServer) -> None:
    send(notifier(smtp), arabic_alert())
    plain, rich = parts(smtp.messages[0].message)
    assert f"«أول *{RED_LINE}* لا يمكن تجاوزه" in plain
    assert f"«أول <b>{RED_LINE}</b> لا يمكن تجاوزه" in rich
    assert '<h2 dir="rtl"' in rich and '<p dir="rtl"' in rich
    assert "also in: bbc-arabic" in plain and "also in: bbc-arabic" in rich


def test_fault_64_title_with_crlf_bcc_adds_no_header_and_is_still_delivered(
    smtp: SMTPTestServer,
) -> None:
    title = "Breaking\r\nBcc: victim@example.com\r\nX-Injected: yes\nSubject: fake"
    send(notifier(smtp), english_alert(title=title))
    [received] = smtp.messages
    assert received.rcpt_tos == (RECIPIENT,)
    message = received.message
    assert "Bcc" not in message and "X-Injected" not in message
    assert message.get_all("Subject") == [
        "[china-russia] Breaking Bcc: victim@example.com X-Injected: yes Subject: fake"
    ]
    head = received.data.split(b"\r\n\r\n", 1)[0]
    assert not any(line.startswith((b"Bcc", b"X-Injected")) for line in head.split(b"\r\n"))


def test_script_and_ampersand_in_the_title_are_escaped(smtp: SMTPTestServer) -> None:
    title = '<script>alert(1)</script> Tom & Jerry </b><a href="javascript:x">y</a>'
    send(notifier(smtp), english_alert(title=title, link="javascript:alert(1)"))
    plain, rich = parts(smtp.messages[0].message)
    assert "<script>" not in rich and 'href="javascript' not in rich
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Tom &amp; Jerry &lt;/b&gt;&lt;a href=" in rich
    # no link to the item, whose link is not http(s): the one link is the footer's way to stop
    assert rich.count("<a ") == 1 and '<a href="mailto:' in rich
    assert "javascript:alert" not in plain  # the link is dropped from the text part too
    assert smtp.messages[0].message["Subject"] == f"[china-russia] {title}"


@pytest.mark.parametrize(
    ("command", "code", "text"),
    [
        ("RCPT", 451, "4.3.0 Mailbox temporarily unavailable"),
        ("RCPT", 421, "4.3.2 Service shutting down"),
        ("DATA", 451, "4.3.0 Local error in processing"),
        ("MAIL", 450, "4.2.0 Try later"),
    ],
)
def test_fault_52_4xx_is_a_temporary_failure(
    smtp: SMTPTestServer, command: Any, code: int, text: str
) -> None:
    smtp.fail_next(command, code, text)
    error = send_error(notifier(smtp), english_alert())
    assert not error.permanent
    assert f"{code} {text}" in error.reason
    send(notifier(smtp), english_alert())  # the retry goes through
    assert len(smtp.messages) == 1


@pytest.mark.parametrize(
    ("command", "code", "text", "what"),
    [
        ("RCPT", 550, "5.1.1 <desk@example.org>: mailbox unavailable", "refused the recipient"),
        ("DATA", 554, "5.7.1 Message rejected as spam", "refused the message"),
        ("MAIL", 553, "5.7.1 Sender address rejected", "refused the sender"),
    ],
)
def test_fault_52_5xx_is_permanent_with_the_servers_reason(
    smtp: SMTPTestServer, command: Any, code: int, text: str, what: str
) -> None:
    smtp.fail_next(command, code, text)
    error = send_error(notifier(smtp), english_alert())
    assert error.permanent
    assert what in error.reason and f"{code} {text}" in error.reason
    assert smtp.messages == []


def test_fault_52_a_server_that_stalls_times_out() -> None:
    with StallingServer() as stall:
        error = send_error(notifier(stall, timeout=0.5), english_alert())
    assert not error.permanent and not error.unconfirmed  # nothing was handed over
    assert "timed out after 0.5s at connect" in error.reason


def test_fault_52_a_server_that_stalls_after_data_times_out_as_maybe_delivered(
    smtp: SMTPTestServer,
) -> None:
    smtp.stall_next("DATA")
    error = send_error(notifier(smtp, timeout=0.5), english_alert())
    assert not error.permanent and error.unconfirmed
    assert "timed out after 0.5s at DATA (the message may have been delivered)" in error.reason


def test_a_server_that_hangs_up_after_taking_the_message_leaves_it_unconfirmed(
    smtp: SMTPTestServer,
) -> None:
    smtp.hang_up_after_data()
    error = send_error(notifier(smtp), english_alert())
    assert len(smtp.messages) == 1  # it did arrive; the client cannot know
    assert not error.permanent and error.unconfirmed
    assert "closed the connection at DATA" in error.reason
    assert error.reason.endswith("(the message may have been delivered)")


def test_a_failure_before_the_message_went_out_is_not_unconfirmed(smtp: SMTPTestServer) -> None:
    smtp.fail_next("RCPT", 421, "4.3.2 Shutting down")
    error = send_error(notifier(smtp), english_alert())
    assert not error.permanent and not error.unconfirmed


def test_a_non_ascii_recipient_goes_through_smtputf8(smtp: SMTPTestServer) -> None:
    recipient = "مكتب@example.org"
    send(notifier(smtp), english_alert(recipient=recipient))
    [received] = smtp.messages
    assert received.rcpt_tos == (recipient,)
    assert received.message["To"] == recipient


def test_connection_refused_is_temporary() -> None:
    class Nowhere:
        host = "127.0.0.1"
        port = free_port()

    error = send_error(notifier(Nowhere()), english_alert())
    assert not error.permanent
    assert "refused the connection" in error.reason


# ---- TLS and AUTH ------------------------------------------------------------------------------


def test_starttls_and_login_deliver(tls_files: TLSFiles) -> None:
    with SMTPTestServer(tls=tls_files, require_starttls=True, auth=(USER, PASSWORD)) as server:
        secure = notifier(
            server,
            starttls=True,
            username=USER,
            password=PASSWORD,
            ssl_context=tls_files.client_context(),
        )
        send(secure, arabic_alert())
        [received] = server.messages
    assert received.tls and received.login == USER


def test_implicit_tls_delivers(tls_files: TLSFiles) -> None:
    with SMTPTestServer(tls=tls_files, implicit_tls=True) as server:
        send(notifier(server, ssl=True, ssl_context=tls_files.client_context()), english_alert())
        [received] = server.messages
    assert received.tls


def test_fault_52_untrusted_certificate_is_a_permanent_config_error(tls_files: TLSFiles) -> None:
    with SMTPTestServer(tls=tls_files, require_starttls=True) as server:
        error = send_error(notifier(server, starttls=True), english_alert())  # system CAs only
        assert server.messages == []
    assert error.permanent
    assert "TLS certificate not trusted" in error.reason and "certificate" in error.reason


def test_starttls_not_offered_is_a_permanent_config_error(smtp: SMTPTestServer) -> None:
    error = send_error(notifier(smtp, starttls=True), english_alert())
    assert error.permanent
    assert "does not offer STARTTLS" in error.reason


def test_implicit_tls_against_a_plain_server_is_a_permanent_config_error(
    smtp: SMTPTestServer,
) -> None:
    error = send_error(notifier(smtp, ssl=True), english_alert())
    assert error.permanent
    assert "TLS failed" in error.reason


def test_login_without_tls_where_auth_needs_tls_is_a_config_error(
    tls_files: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    with SMTPTestServer(tls=tls_files, require_starttls=True, auth=(USER, PASSWORD)) as server:
        error = send_error(notifier(server, username=USER, password=PASSWORD), english_alert())
    assert error.permanent
    assert "does not offer AUTH" in error.reason
    assert "email.insecure_login" in caplog.text


def test_fault_52_wrong_password_is_permanent_and_no_password_leaks(
    tls_files: TLSFiles, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    with SMTPTestServer(
        tls=tls_files, require_starttls=True, auth=(USER, "the-right-one")
    ) as server:
        wrong = notifier(
            server,
            starttls=True,
            username=USER,
            password=PASSWORD,
            ssl_context=tls_files.client_context(),
        )
        error = send_error(wrong, english_alert())
        assert server.messages == []
    assert error.permanent
    assert "rejected the login of monitor" in error.reason and "535" in error.reason

    secrets = [
        PASSWORD,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    ]
    texts = [repr(wrong), str(vars(wrong))]
    chained: BaseException | None = error
    while chained is not None:
        texts += [str(chained), repr(chained), repr(chained.args)]
        chained = chained.__cause__ or chained.__context__
    # Our records (aiosmtpd, the test server, logs its own side of the AUTH dialogue at DEBUG).
    texts += [r.getMessage() for r in caplog.records if r.name.startswith("monitor")]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]  # smtplib's debug output would go to stderr
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_password_is_masked_if_a_server_echoes_it() -> None:
    quiet = EmailNotifier(host="smtp.example.org", sender=SENDER, username=USER, password=PASSWORD)
    echoed = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    import smtplib

    error = quiet._error(smtplib.SMTPResponseException(501, b"bad " + echoed), "AUTH", RECIPIENT)
    assert echoed.decode() not in error.reason and "***" in error.reason


# ---- digests -----------------------------------------------------------------------------------


def test_digest_arrives_grouped_by_watchlist_newest_first(smtp: SMTPTestServer) -> None:
    alerts = [
        english_alert(id=10, title="Old China story", published=datetime(2024, 5, 1, tzinfo=UTC)),
        arabic_alert(id=11),
        english_alert(id=12, title="New China story", published=datetime(2024, 5, 3, tzinfo=UTC)),
    ]
    channel = notifier(smtp)

    async def go() -> None:
        await channel.send_digest(alerts, title="Daily digest: 3 alerts")
        await channel.close()

    asyncio.run(go())
    [received] = smtp.messages
    message = received.message
    assert message["Subject"] == "Daily digest: 3 alerts"
    plain, rich = parts(message)
    order = [plain.index(s) for s in ("== china-russia", "New China", "Old China", "== taiwan")]
    assert order == sorted(order)
    assert rich.index("New China story") < rich.index("Old China story")
    assert f"<b>{RED_LINE}</b>" in rich


# ---- rendering (pure) --------------------------------------------------------------------------


def test_fault_65_subject_is_one_line_without_bidi_controls_and_capped() -> None:
    title = "\u202eevil\u202c " + "word " * 600 + "\x00\x1b[31m\u2028end\u200b"
    subject = render_alert(english_alert(title=title), sender=SENDER, to=RECIPIENT)["Subject"]
    assert len(subject) <= SUBJECT_CHARS and subject.endswith("…")
    assert subject.startswith("[china-russia] evil word word")
    assert not any(c in subject for c in "\u202e\u202c\x00\x1b\u2028\u200b\r\n")


def test_one_line_keeps_persian_zwnj_and_drops_controls() -> None:
    assert one_line("می\u200cخواهم\r\n\t \u2066x\u2069") == "می\u200cخواهم x"


def test_encoded_words_keep_every_space_inside_a_word() -> None:
    text = "الأميركي... وزير " * 10
    words = encoded_words(text)
    assert all(len(w) <= 75 for w in words)
    decoded = "".join(base64.b64decode(w[len("=?utf-8?b?") : -2]).decode("utf-8") for w in words)
    assert decoded == text


@pytest.mark.parametrize(
    "title",
    [
        "Taiwan says the red line was crossed, officials warn " * 3,  # long ASCII: folded
        "=?utf-8?q?Bcc:_victim@example.com?=",  # looks like an encoded word: shown literally
        "Wang Yi وانغ يي:  «أول خط أحمر»... 台湾 😀 می\u200cخواهم",
        "x" * 150,  # one long word
    ],
)
def test_subjects_decode_back_to_the_same_text(title: str) -> None:
    message = render_alert(english_alert(title=title), sender=SENDER, to=RECIPIENT)
    raw = message.as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and all(len(line) <= 998 for line in head.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == one_line(f"[china-russia] {title}", SUBJECT_CHARS)


def test_message_id_is_stable_for_a_resend() -> None:
    first = render_alert(arabic_alert(), sender=SENDER, to=RECIPIENT)["Message-ID"]
    again = render_alert(arabic_alert(), sender=SENDER, to=RECIPIENT)["Message-ID"]
    other = render_alert(arabic_alert(id=99), sender=SENDER, to=RECIPIENT)["Message-ID"]
    assert first == again != other
    assert first.endswith("@example.org>")


def test_arabic_sender_name_round_trips() -> None:
    sender = "مرصد الأخبار... العربية <monitor@example.org>"
    message = render_alert(english_alert(), sender=sender, to=RECIPIENT)
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    [address] = parsed["From"].addresses
    assert address.display_name == "مرصد الأخبار... العربية"
    assert address.addr_spec == "monitor@example.org"


def test_title_hits_are_bold_and_long_titles_capped_in_html() -> None:
    alert = english_alert(title="Taiwan " + "x" * 1000, hits=(Hit("Taiwan", "title", 0, 6),))
    _, rich = parts(render_alert(alert, sender=SENDER, to=RECIPIENT))
    heading = rich[rich.index("<h2") : rich.index("</h2>")]
    assert "<b>Taiwan</b>" in heading and "…" in heading and len(heading) < 450


def test_digest_groups_order() -> None:
    alerts = [
        english_alert(id=1, watchlist="a", published=datetime(2024, 1, 1, tzinfo=UTC)),
        english_alert(id=2, watchlist="b", published=datetime(2024, 1, 3, tzinfo=UTC)),
        english_alert(id=3, watchlist="a", published=datetime(2024, 1, 2, tzinfo=UTC)),
        english_alert(id=4, watchlist="a", published=None),
    ]
    groups = digest_groups(alerts)
    assert [(name, [a.id for a in members]) for name, members in groups] == [
        ("b", [2]),
        ("a", [3, 1, 4]),
    ]
    with pytest.raises(ValueError):
        render_digest([], sender=SENDER, to=RECIPIENT, title="empty")
