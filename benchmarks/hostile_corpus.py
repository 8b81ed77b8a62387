"""Adversarial messages: what a spammer (or anyone) can send that the request limits admit
and that costs a parser, a featurizer or a model more than ordinary mail does.

Each case is built to stay under the service's request limit (``SPAM_MAX_REQUEST_BYTES``,
5 MB) and targets one mechanism: deep nesting (HTML, MIME, attached messages), sheer count
(headers, parts, URLs, tags, encoded words), sheer length (one word, one line, one header)
and blow-ups through encodings (base64 of base64, quoted-printable full of escapes). Used by
``make bench-hostile`` and by the test that holds the per-message cost bound.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

HEAD = (
    "From: Someone <someone@example.biz>\n"
    "To: victim@example.org\n"
    "Subject: hello\n"
    "Date: Tue, 14 Mar 2006 10:00:00 +0000\n"
    "Message-ID: <1@example.biz>\n"
)


def _mail(headers: str, body: str, content_type: str = "text/plain") -> bytes:
    return (HEAD + headers + f"MIME-Version: 1.0\nContent-Type: {content_type}\n\n" + body).encode(
        "utf-8", "surrogateescape"
    )


def deep_html() -> bytes:
    """50,000 nested ``<div>``: a DOM parser's depth is the attacker's to choose."""
    n = 50_000
    return _mail("", "<html><body>" + "<div>" * n + "buy now" + "</div>" * n, "text/html")


def unclosed_tags() -> bytes:
    """200,000 unclosed ``<b>``: nesting without a single closing tag."""
    return _mail("", "<html><body>" + "<b>x" * 200_000, "text/html")


def flat_tags() -> bytes:
    """300,000 sibling ``<span>``: a wide tree instead of a deep one."""
    return _mail("", "<html><body>" + "<span>x</span>" * 300_000, "text/html")


def anchors() -> bytes:
    """100,000 links whose text names another site: the link-mismatch sign's scan."""
    body = '<a href="http://evil.example/x">http://bank.example/</a> ' * 40_000
    return _mail("", "<html><body>" + body, "text/html")


def deep_mime() -> bytes:
    """MIME nested 2,000 deep: each level a multipart holding the next."""
    n = 2_000
    head = "".join(
        f'--b{i}\nContent-Type: multipart/mixed; boundary="b{i + 1}"\n\n' for i in range(n)
    )
    tail = "".join(f"\n--b{i}--\n" for i in reversed(range(n)))
    inner = f"--b{n}\nContent-Type: text/plain\n\nhello\n--b{n}--\n"
    return _mail("", head + inner + tail, 'multipart/mixed; boundary="b0"')


def many_parts() -> bytes:
    """20,000 text parts in one multipart."""
    part = "--sep\nContent-Type: text/plain\n\nhello there\n"
    return _mail("", part * 20_000 + "--sep--\n", 'multipart/mixed; boundary="sep"')


def nested_messages() -> bytes:
    """``message/rfc822`` attachments 1,000 deep."""
    inner = "Subject: inner\n\nhello\n"
    for _ in range(1_000):
        inner = "Content-Type: message/rfc822\n\n" + inner
    return _mail("", inner.split("\n\n", 1)[1], "message/rfc822")


def many_headers() -> bytes:
    """100,000 header lines (X-Junk-N)."""
    return _mail("".join(f"X-Junk-{i}: value {i}\n" for i in range(100_000)), "hello")


def many_received() -> bytes:
    """30,000 ``Received:`` lines: a forged relay chain."""
    line = "Received: from a.example (a.example [192.0.2.1]) by b.example; Tue, 14 Mar 2006 +0000\n"
    return _mail(line * 30_000, "hello")


def long_header() -> bytes:
    """A 3 MB Subject, folded into 70-character lines."""
    words = ("word " * 600_000).strip()
    folded = "\n ".join(words[i : i + 70] for i in range(0, len(words), 70))
    return (HEAD.replace("Subject: hello\n", f"Subject: {folded}\n") + "\nhello").encode()


def encoded_words() -> bytes:
    """60,000 RFC 2047 encoded words in the Subject."""
    word = "=?utf-8?b?" + base64.b64encode(b"spam ").decode() + "?="
    subject = "\n ".join([word] * 60_000)
    return (HEAD.replace("Subject: hello\n", f"Subject: {subject}\n") + "\nhello").encode()


def many_urls() -> bytes:
    """150,000 URLs in a plain-text body."""
    return _mail("", " ".join(f"http://h{i}.example.biz/p" for i in range(150_000)))


def long_word() -> bytes:
    """One 4 MB word."""
    return _mail("", "a" * 4_000_000)


def long_line() -> bytes:
    """One 4.4 MB line of distinct short words."""
    return _mail("", " ".join(f"w{i}" for i in range(550_000)))


def base64_of_base64() -> bytes:
    """A base64 body whose text is itself base64 of base64: 3 MB on the wire."""
    inner = base64.b64encode(base64.b64encode(b"cheap pills " * 150_000)).decode()
    body = base64.encodebytes(inner.encode()).decode()
    return _mail("Content-Transfer-Encoding: base64\n", body)


def quoted_printable() -> bytes:
    """A 4 MB quoted-printable body that is all escapes and soft line breaks."""
    line = "=41=42=43=44=45=46=47=48=49=4A=4B=4C=4D=4E=4F=50=51=52=53=54=55=56=57=58=59=\n"
    return _mail("Content-Transfer-Encoding: quoted-printable\n", line * 52_000)


def html_in_many_parts() -> bytes:
    """3,000 HTML alternatives, each with links and fonts."""
    part = (
        "--sep\nContent-Type: text/html\n\n<html><body><font size=7>BUY</font> "
        '<a href="http://evil.example/">http://bank.example/</a></body></html>\n'
    )
    return _mail("", part * 3_000 + "--sep--\n", 'multipart/alternative; boundary="sep"')


CASES: dict[str, Callable[[], bytes]] = {
    "deep HTML (50k nested divs)": deep_html,
    "unclosed tags (200k)": unclosed_tags,
    "flat tags (300k spans)": flat_tags,
    "link-text mismatches (40k anchors)": anchors,
    "deep MIME (2,000 levels)": deep_mime,
    "many parts (20k)": many_parts,
    "nested message/rfc822 (1,000)": nested_messages,
    "many headers (100k)": many_headers,
    "forged Received chain (30k)": many_received,
    "3 MB Subject": long_header,
    "encoded words (60k)": encoded_words,
    "many URLs (150k)": many_urls,
    "one 4 MB word": long_word,
    "one 4.4 MB line": long_line,
    "base64 of base64 (3 MB)": base64_of_base64,
    "quoted-printable escapes (4 MB)": quoted_printable,
    "HTML in many parts (3k)": html_in_many_parts,
}
