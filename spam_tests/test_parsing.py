"""The parser must survive everything a mail server delivers, and never raise."""

from __future__ import annotations

import pytest

from spam_serving import parsing
from spam_serving.parsing import (
    MAX_BODY_CHARS,
    MAX_RAW_BYTES,
    content_hash,
    from_record,
    message_from_fields,
    normalise_text,
    parse_message,
    registrable_domain,
)

SIMPLE = (
    b"From: Alice Example <Alice@Mail.Example.co.uk>\n"
    b"Reply-To: bob@other.com\n"
    b"To: you@example.org\n"
    b"Subject: =?utf-8?q?Caf=C3=A9_deal?=\n"
    b"Date: Tue, 01 Oct 2002 10:00:00 +0000\n"
    b"Message-ID: <1@x>\n"
    b"Received: from a by b; Tue, 01 Oct 2002 10:00:05 +0000\n"
    b"\n"
    b"Visit http://www.Deals.example.com/x and https://1.2.3.4/y now\n"
)


def test_simple_message_fields():
    m = parse_message(SIMPLE)
    assert m.subject == "Café deal"
    assert m.sender == "alice@mail.example.co.uk"
    assert m.sender_domain == "example.co.uk"
    assert m.reply_to_domain == "other.com"
    assert m.sent_at is not None and m.sent_at.year == 2002
    assert m.received_at is not None and m.received_at.second == 5
    assert m.n_received == 1 and m.has_message_id
    assert m.n_urls == 2
    assert m.url_domains.split() == ["example.com", "1.2.3.4"]
    assert m.parse_error is None and not m.truncated


def test_unknown_charset_and_broken_base64_do_not_raise():
    raw = (
        b"From: x@y.com\nSubject: hi\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/alternative; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain; charset=x-no-such-charset\n\nhello \xff\xfe world\n"
        b"--B\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        b"!!!not base64!!!\n--B--\n"
    )
    m = parse_message(raw)
    assert "hello" in m.body and "world" in m.body
    assert m.is_html and not m.html_only
    assert m.n_parts == 3


def test_missing_boundary_and_headers():
    raw = b"Content-Type: multipart/mixed\n\nno boundary at all"
    m = parse_message(raw)
    assert m.sender == "" and m.subject == "" and m.sent_at is None
    assert m.defects is not None  # recorded, not raised
    assert m.content_hash


@pytest.mark.parametrize(
    "raw", [b"", b"\x00\x01\x02", b"garbage without headers", "unicode str ☃".encode()]
)
def test_degenerate_inputs(raw):
    m = parse_message(raw)
    assert isinstance(m.body, str)
    assert len(m.content_hash) == 64


def test_huge_message_is_truncated_and_flagged():
    body = b"spam " * (MAX_RAW_BYTES // 4)
    m = parse_message(b"Subject: big\n\n" + body)
    assert m.truncated
    assert len(m.body) <= MAX_BODY_CHARS


def test_html_only_message_is_stripped():
    raw = (
        b"From: a@b.com\nContent-Type: text/html\n\n"
        b"<html><head><style>p{}</style><script>var x</script></head><body>"
        b'<p>Buy <b>NOW</b></p><img src="x.gif"><a href="http://cheap.biz/">here</a></body></html>'
    )
    m = parse_message(raw)
    assert m.html_only and m.is_html
    assert "Buy" in m.body and "NOW" in m.body and "var x" not in m.body and "p{}" not in m.body
    assert m.n_images == 1 and m.n_links == 1
    assert m.url_domains == "cheap.biz"


def test_attachment_counted_not_read():
    raw = (
        b'From: a@b.com\nContent-Type: multipart/mixed; boundary="Z"\n\n'
        b"--Z\nContent-Type: text/plain\n\nsee attached\n"
        b"--Z\nContent-Type: application/octet-stream\n"
        b'Content-Disposition: attachment; filename="a.exe"\n'
        b"Content-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA\n--Z--\n"
    )
    m = parse_message(raw)
    assert m.n_attachments == 1
    assert m.body.strip() == "see attached"


def test_record_roundtrip_is_exact():
    m = parse_message(SIMPLE)
    assert from_record(m.to_record()) == m


def test_content_hash_ignores_whitespace_only_changes():
    assert content_hash("Hi", "a  b\n\nc") == content_hash("Hi", "a b c")
    assert content_hash("Hi", "a b c") != content_hash("Hi", "a b d")


def test_fields_input_goes_through_the_same_parser():
    m = message_from_fields(
        subject="Win\nnow",
        body="click http://x.com",
        sender="p@q.net",
        headers={"X-Mailer": "Bulk 1.0", "Subject": "ignored"},
    )
    assert m.subject == "Win now"  # header injection via newline is neutralised
    assert m.sender_domain == "q.net" and m.n_urls == 1
    assert "xm:bulk" in m.header_tokens.split()


@pytest.mark.parametrize(
    "host, expected",
    [
        ("mail.example.com", "example.com"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("LOCALHOST", "localhost"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_registrable_domain(host, expected):
    assert registrable_domain(host) == expected


def test_whole_real_sample_parses(real_sample):
    parsed = [parse_message(raw) for _, _, raw in real_sample]
    failures = [p.parse_error for p in parsed if p.parse_error]
    assert len(failures) / len(parsed) < 0.01
    assert sum(1 for p in parsed if p.sent_at is None) / len(parsed) < 0.05
    assert sum(1 for p in parsed if p.body.strip()) / len(parsed) > 0.98


def test_normalise_text_matches_the_regex_on_every_unicode_space():
    """normalise_text uses str.split for speed; it must equal the ``\\s+`` regex it replaced."""
    import re
    import sys

    spaces = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if re.match(r"\s", c))
    assert len(spaces) >= 25  # \x1c-\x1f, \x85, \xa0, \u2028, \u3000, ...
    text = spaces + "a" + spaces[::-1] + "b c\x00d" + spaces
    assert normalise_text(text) == re.sub(r"\s+", " ", text).strip() == "a b c\x00d"


def test_headers_read_like_message_get():
    """The one-pass header index keeps Message.get's rules: first value wins, names are
    case-insensitive, every Received hop counts, and 8-bit bytes go through the policy."""
    raw = (
        b"received: from a by b; Tue, 01 Oct 2002 10:00:05 +0000\n"
        b"From: First <first@one.example.com>\n"
        b"FROM: Second <second@two.example.org>\n"
        b"Received: from c by d; Mon, 30 Sep 2002 09:00:00 +0000\n"
        b"RECEIVED: from e by f; Sun, 29 Sep 2002 09:00:00 +0000\n"
        b"Subject: caf\xe9 \xff\n"
        b"message-id: <x@y>\n"
        b"x-mailer: Foo/1.0 (bar)\n"
        b"\n"
        b"HTTP://WWW.Upper.Example.COM/path and Ftp://files.example.net x\n"
    )
    m = parse_message(raw)
    assert m.sender == "first@one.example.com" and m.sender_domain == "example.com"
    assert m.n_received == 3 and m.has_message_id
    assert m.received_at is not None and m.received_at.day == 1  # the first (newest) hop
    assert m.subject.startswith("caf") and "\ufffd" in m.subject
    tokens = m.header_tokens.split()
    assert "h:received" in tokens and "h:from" in tokens and "xm:foo" in tokens
    assert m.n_urls == 2 and m.url_domains == "example.com example.net"  # scheme case ignored


def _full_parse_records(raws: list[bytes], monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """parse_message with the header-only fast path switched off: the reference."""
    with monkeypatch.context() as m:
        m.setattr(parsing, "_parse_bytes", parsing._PARSER.parsebytes)
        return [parse_message(raw).to_record() for raw in raws]


def test_single_part_fast_path_changes_nothing(real_sample, monkeypatch):
    """The whole-body fast path for single-part mail (and the filename shortcut) must give
    the very records the full compat32 parse gives: on real mail (LF and CRLF), 8-bit bodies,
    a header block cut short by a non-header line, a multipart Content-Type the byte guess
    cannot see (past the scanned head), message/rfc822, and RFC 2231 file names."""
    raws = [raw for _, _, raw in real_sample]
    raws += [raw.replace(b"\n", b"\r\n") for raw in raws[::5]]
    pad = b"".join(b"X-Pad-%d: %s\n" % (i, b"y" * 60) for i in range(1200))  # > 64 KB
    hidden = (
        pad + b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n'
        b"hello\n--b\nContent-Type: application/pdf\n\nxx\n--b--\n"
    )
    rfc822 = (
        b"Subject: fwd\nContent-Type: message/rfc822\n\n"
        b"From: inner@example.com\nSubject: inner\n\ninner body http://in.example.org/\n"
    )
    named = (
        b'Subject: a\nContent-Type: text/plain; name*0="re"; name*1="port.txt"\n\nattached text\n'
    )
    inline = (
        b"Subject: b\nContent-Disposition: inline; filename*=utf-8''r%C3%A9sum%C3%A9.txt\n\n"
        b"inline text\n"
    )
    early = b"Subject: c\nthis line is no header\nX-Late: 1\n\nbody \xff\n"
    eightbit = b"Subject: d\nContent-Type: text/plain; charset=latin-1\n\ncaf\xe9 \xef\xbf\xbd\n"
    crlf = b"Subject: e\r\nFrom: a@b.example\r\n\r\nline one\r\n\r\nline two\r\n"
    special = [early, eightbit, crlf, hidden, rfc822, named, inline]
    expected = _full_parse_records(raws + special, monkeypatch)
    assert [parse_message(raw).to_record() for raw in raws + special] == expected
    assert expected[-4]["n_attachments"] == 1 and "hello" in expected[-4]["body"]
    assert "X-Late" in expected[-7]["body"] and "\u00e9" in expected[-6]["body"]
    assert "inner body" in expected[-3]["body"] and expected[-3]["n_parts"] == 2
    assert expected[-2]["n_attachments"] == expected[-1]["n_attachments"] == 1  # named parts
    assert parsing._parse_bytes(hidden).is_multipart()  # the guess missed; the parse did not
