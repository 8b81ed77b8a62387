"""Rule-style signs: each one fires on the pattern it names and not on ordinary mail; a JSON
message never carries delivery signs; the sign set is closed and directed."""

from __future__ import annotations

import pytest

from spam_serving.parsing import message_from_fields, parse_message
from spam_serving.signs import DELIVERY_SIGNS, HAM_SIGNS, SIGNS, SPAM_SIGNS

RELAY = (
    "Received: from mail.example.org (mail.example.org [192.0.2.10])\n"
    "\tby mx.example.net (Postfix) with ESMTP id 1; Tue, 3 Sep 2002 10:00:00 +0100\n"
)
PLAIN_HEAD = {
    "From": "Alice <alice@example.org>",
    "To": "bob@example.net",
    "Date": "Tue, 3 Sep 2002 09:59:00 +0100",
    "Message-ID": "<20020903085900.1@mail.example.org>",
    "MIME-Version": "1.0",
    "Content-Type": "text/plain; charset=us-ascii",
    "Subject": "Lunch on Friday",
}
PLAIN_BODY = (
    "Hi Bob,\n\nare we still on for lunch on Friday? I can book the usual place.\n\nAlice\n"
)


def message(headers: dict[str, str | None] | None = None, body: str = PLAIN_BODY, relay=RELAY):
    """A well-formed personal message, with ``headers`` replaced (None deletes one)."""
    head = {**PLAIN_HEAD, **(headers or {})}
    lines = "".join(f"{k}: {v}\n" for k, v in head.items() if v is not None)
    return parse_message((relay + lines + "\n" + body).encode())


def signs(msg) -> set[str]:
    return set(msg.signs.split())


HTML_HEAD = {"Content-Type": "text/html; charset=us-ascii"}

CASES = [
    ("freemail_from", {"From": "deals@yahoo.com"}, PLAIN_BODY),
    ("freemail_relay_missing", {"From": "deals@yahoo.com"}, PLAIN_BODY),
    ("freemail_reply_to_differs", {"Reply-To": "cash4u@hotmail.com"}, PLAIN_BODY),
    ("freemail_envelope_digits", {"Return-Path": "<bob1234@hotmail.com>"}, PLAIN_BODY),
    ("msgid_missing", {"Message-ID": None}, PLAIN_BODY),
    ("msgid_malformed", {"Message-ID": "no-angle-brackets"}, PLAIN_BODY),
    ("msgid_outlook_random", {"Message-ID": "<a1b2c3d4e5f6$a1b2c3d4$e5f6a7b8@x.com>"}, PLAIN_BODY),
    (
        "msgid_outlook_uppercase",
        {"Message-ID": "<000801C2533F$A1B2C3D4$0100A8C0@x.com>"},
        PLAIN_BODY,
    ),
    ("outlook_no_mimeole", {"X-Mailer": "Microsoft Outlook Express 6.00"}, PLAIN_BODY),
    (
        "outlook_html_only",
        {"X-Mailer": "Microsoft Outlook Express 6.00", **HTML_HEAD},
        "<html><body><p>Hello there, a friendly note.</p></body></html>",
    ),
    ("date_invalid", {"Date": "yesterday at noon"}, PLAIN_BODY),
    ("date_zone_absurd", {"Date": "Tue, 3 Sep 2002 09:59:00 +1900"}, PLAIN_BODY),
    ("date_future", {"Date": "Tue, 10 Sep 2002 09:59:00 +0100"}, PLAIN_BODY),
    ("date_past_12h", {"Date": "Mon, 2 Sep 2002 09:59:00 +0100"}, PLAIN_BODY),
    ("date_past_4d", {"Date": "Mon, 26 Aug 2002 09:59:00 +0100"}, PLAIN_BODY),
    ("to_missing", {"To": None}, PLAIN_BODY),
    ("to_undisclosed", {"To": "undisclosed-recipients:;"}, PLAIN_BODY),
    ("many_recipients", {"To": ", ".join(f"u{i}@example.net" for i in range(12))}, PLAIN_BODY),
    ("subject_all_caps", {"Subject": "MAKE MONEY FAST FROM HOME"}, PLAIN_BODY),
    ("subject_id_tail", {"Subject": "Your new rates        xk4j9q"}, PLAIN_BODY),
    ("from_encoded", {"From": "=?iso-8859-1?q?Deals?= <deals@example.org>"}, PLAIN_BODY),
    ("mime_no_version", {"MIME-Version": None}, PLAIN_BODY),
    (
        "text_base64",
        {"Content-Transfer-Encoding": "base64"},
        "SGkgQm9iLCBhcmUgd2Ugc3RpbGwgb24gZm9yIGx1bmNoIG9uIEZyaWRheT8K\n",
    ),
    ("qp_long_lines", {"Content-Transfer-Encoding": "quoted-printable"}, "word " * 40 + "\n"),
    ("html_no_html_tag", HTML_HEAD, "<p>Hello there, a friendly note for you today.</p>"),
    ("html_font_big", HTML_HEAD, "<html><font size=7>BUY NOW</font> and more text</html>"),
    ("html_font_tiny", HTML_HEAD, "<html><font size=1>hidden words</font> visible</html>"),
    (
        "html_images_little_text",
        HTML_HEAD,
        '<html><img src="http://img.example.biz/a.gif"> click</html>',
    ),
    (
        "html_link_text_mismatch",
        HTML_HEAD,
        '<html><a href="http://evil.example.biz/x">http://www.paypal.com/</a> text</html>',
    ),
    ("url_obfuscated", {}, "see http://www.bank.com@evil.example.biz/login now, thanks friend"),
    ("url_ip_host", {}, "see http://192.0.2.44/offer/ now for details, thanks my friend"),
    ("empty_body", {}, "\n"),
    ("dear_generic", {}, "Dear Friend,\n\nI am writing to you with a business proposal.\n"),
    ("list_headers", {"List-Id": "<users.lists.example.org>"}, PLAIN_BODY),
    ("bulk_precedence", {"Precedence": "bulk"}, PLAIN_BODY),
    ("in_reply", {"In-Reply-To": "<1@example.net>"}, PLAIN_BODY),
    ("sender_domain_in_urls", {}, PLAIN_BODY + "http://www.example.org/menu\n"),
    ("msgid_sender_domain", {}, PLAIN_BODY),
]


def test_ordinary_mail_raises_no_spam_sign():
    assert signs(message()) & set(SPAM_SIGNS) == set()


@pytest.mark.parametrize(("sign", "headers", "body"), CASES, ids=[c[0] for c in CASES])
def test_each_sign_fires_on_its_pattern(sign, headers, body):
    assert sign in signs(message(headers, body))


def test_relay_signs():
    dynamic = (
        "Received: from [10.0.0.5] (helo=fixed) by local; Tue, 3 Sep 2002 10:00:00 +0100\n"
        "Received: from 192.0.2.99 (pool-192-0-2-99.dsl.example.net [192.0.2.99])\n"
        "\tby mx.example.net; Tue, 3 Sep 2002 10:00:00 +0100\n"
    )
    found = signs(message(relay=dynamic))
    assert {"relay_dynamic_host", "relay_helo_bare"} <= found
    mismatch = "Received: from 198.51.100.1 (unknown [192.0.2.99]) by mx; Tue, 3 Sep 2002 +0100\n"
    assert "relay_helo_ip_mismatch" in signs(message(relay=mismatch))
    absurd = (
        "Received: from a.example.org (a.example.org [192.0.2.1]) by mx; Tue, 3 Sep 2002 +2300\n"
    )
    assert "received_zone_absurd" in signs(message(relay=absurd))
    assert "received_none" in signs(message(relay=""))
    local = "Received: from localhost (localhost [127.0.0.1]) by me; Tue, 3 Sep 2002 +0100\n"
    assert "local_delivery" in signs(message(relay=local))


def test_json_fields_carry_no_delivery_sign():
    """No headers is absent evidence for a JSON caller, not a missing Message-ID or Date."""
    msg = message_from_fields(subject="MAKE MONEY FAST FROM HOME", body="Dear Friend, hi")
    found = signs(msg)
    assert msg.from_fields and not (found & DELIVERY_SIGNS)
    assert {"subject_all_caps", "dear_generic"} <= found  # content signs still count
    # a JSON request that carries its Received chain is judged as the delivered mail it is
    delivered = message_from_fields(subject="hi", body=PLAIN_BODY, headers={"Received": "x"})
    assert not delivered.from_fields and "msgid_missing" in signs(delivered)


def test_sign_set_is_closed_and_directed():
    assert len(set(SIGNS)) == len(SIGNS) == len(SPAM_SIGNS) + len(HAM_SIGNS)
    assert set(SIGNS) >= DELIVERY_SIGNS
    every = {c[0] for c in CASES} | {
        "relay_dynamic_host",
        "relay_helo_bare",
        "relay_helo_ip_mismatch",
        "received_zone_absurd",
        "received_none",
        "local_delivery",
        "subject_raw_8bit",
        "html_alt_text_differs",
    }
    assert every == set(SIGNS), "every sign has a test case above"


def test_alt_text_and_raw_8bit_subject():
    alt = (
        'Content-Type: multipart/alternative; boundary="b"\n\n--b\n'
        "Content-Type: text/plain\n\nplease read the newsletter about gardening tools today\n"
        "--b\nContent-Type: text/html\n\n<html><body>cheap pills online pharmacy no "
        "prescription viagra order here</body></html>\n--b--\n"
    )
    head = {k: v for k, v in PLAIN_HEAD.items() if k != "Content-Type"}
    raw = RELAY + "".join(f"{k}: {v}\n" for k, v in head.items()) + alt
    assert "html_alt_text_differs" in signs(parse_message(raw.encode()))
    raw8 = (RELAY + "Subject: Gr\xfc\xdfe aus K\xf6ln\n\nbody text of the message\n").encode(
        "latin-1"
    )
    assert "subject_raw_8bit" in signs(parse_message(raw8))
