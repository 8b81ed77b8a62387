"""Rule-style evidence: named yes/no signs of how a message was made, not what it says.

SpamAssassin's stock rules beat a learned model at the low-false-positive end because a
large share of spam is sent by software that gets mail formats wrong in ways no mail client
does: an Outlook-shaped Message-ID whose timestamp digits are random, a Date with a time
zone of +1900, a "Yahoo" sender that never passed through Yahoo, a claimed Outlook that
sends bare HTML. These signs re-implement those *ideas* from the message's own headers and
MIME/HTML structure (no rule file is read or copied); which way each sign points and how
much it weighs is learned (``spam_serving.ensemble``), with the direction fixed by design:
every sign in :data:`SPAM_SIGNS` can only add spam evidence, every one in
:data:`HAM_SIGNS` only ham evidence. That constraint is what keeps a sign from learning a
period artifact of the training mail (README, quality).

Signs are computed by the parser (``spam_serving.parsing``) once, so training and serving
see the same ones; a message built from JSON fields carries no delivery headers, so the
signs in :data:`DELIVERY_SIGNS` are never raised for it (absent, not "suspiciously
missing"). Every check is bounded: it reads at most a fixed prefix of each header or part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

#: Free mail providers of the corpus era and since: a free address is cheap to throw away.
FREEMAIL_DOMAINS = frozenset(
    [
        "hotmail.com",
        "msn.com",
        "live.com",
        "outlook.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "yahoo.de",
        "yahoo.ca",
        "yahoo.com.au",
        "ymail.com",
        "aol.com",
        "aim.com",
        "gmail.com",
        "googlemail.com",
        "excite.com",
        "lycos.com",
        "mail.com",
        "email.com",
        "usa.net",
        "juno.com",
        "netzero.net",
        "netscape.net",
        "earthlink.net",
        "rediffmail.com",
        "eudoramail.com",
        "zzn.com",
        "mail.ru",
        "yandex.ru",
        "gmx.net",
        "gmx.de",
        "gmx.com",
        "web.de",
        "caramail.com",
        "libero.it",
        "hushmail.com",
        "operamail.com",
        "fastmail.fm",
        "iname.com",
        "bigfoot.com",
        "sina.com",
        "163.com",
        "126.com",
        "qq.com",
        "emailaccount.com",
    ]
)
#: Freemail providers whose outgoing relays name themselves in ``Received:`` lines.
_FREEMAIL_RELAY_NAMES = {
    "yahoo.com": ("yahoo.",),
    "hotmail.com": ("hotmail.", "msn.com", "passport"),
    "msn.com": ("hotmail.", "msn.com"),
    "aol.com": ("aol.com", "aol.net"),
    "excite.com": ("excite.",),
    "lycos.com": ("lycos.",),
}

SPAM_SIGNS: tuple[str, ...] = (
    "freemail_from",
    "freemail_reply_to_differs",
    "freemail_envelope_digits",
    "freemail_relay_missing",
    "msgid_missing",
    "msgid_malformed",
    "msgid_outlook_random",
    "msgid_outlook_uppercase",
    "outlook_no_mimeole",
    "outlook_html_only",
    "date_invalid",
    "date_zone_absurd",
    "date_future",
    "date_past_12h",
    "date_past_4d",
    "received_zone_absurd",
    "received_none",
    "relay_dynamic_host",
    "relay_helo_ip_mismatch",
    "relay_helo_bare",
    "to_missing",
    "to_undisclosed",
    "many_recipients",
    "subject_all_caps",
    "subject_raw_8bit",
    "subject_id_tail",
    "from_encoded",
    "mime_no_version",
    "text_base64",
    "qp_long_lines",
    "html_no_html_tag",
    "html_font_big",
    "html_font_tiny",
    "html_images_little_text",
    "html_link_text_mismatch",
    "html_alt_text_differs",
    "url_obfuscated",
    "url_ip_host",
    "empty_body",
    "dear_generic",
)
HAM_SIGNS: tuple[str, ...] = (
    "list_headers",
    "bulk_precedence",
    "in_reply",
    "sender_domain_in_urls",
    "msgid_sender_domain",
    "local_delivery",
)
SIGNS: tuple[str, ...] = SPAM_SIGNS + HAM_SIGNS
#: Signs read off the delivery headers (relays, dates, ids, recipients): not raised for a
#: message built from JSON fields, which has none of them.
DELIVERY_SIGNS = frozenset(
    {
        "freemail_envelope_digits",
        "freemail_relay_missing",
        "msgid_missing",
        "msgid_malformed",
        "msgid_outlook_random",
        "msgid_outlook_uppercase",
        "outlook_no_mimeole",
        "outlook_html_only",
        "date_invalid",
        "date_zone_absurd",
        "date_future",
        "date_past_12h",
        "date_past_4d",
        "received_zone_absurd",
        "received_none",
        "relay_dynamic_host",
        "relay_helo_ip_mismatch",
        "relay_helo_bare",
        "to_missing",
        "to_undisclosed",
        "many_recipients",
        "mime_no_version",
        "list_headers",
        "bulk_precedence",
        "in_reply",
        "msgid_sender_domain",
        "local_delivery",
    }
)

_HEAD = 2_000
"""Characters of a header value that any check reads."""
HTML_SCAN = 200_000
"""Characters of HTML source that the HTML checks scan."""
MAX_RECEIVED = 30
"""``Received:`` lines read (a real chain has < 15; a forged one may have hundreds)."""

_OE_MSGID_RE = re.compile(r"<([0-9a-fA-F]{12})\$[0-9a-fA-F]{8}\$[0-9a-fA-F]{8}@")
_MSGID_RE = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
_MSGID_DOMAIN_RE = re.compile(r"@([^>\s]+)>")
_ZONE_RE = re.compile(r"([+-])(\d\d)(\d\d)\b")
_FROM_PART_RE = re.compile(r"^\s*from\s+(\S+)\s*\(([^)]*)\)", re.IGNORECASE)
_IPV4_RE = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})\b")
_DYNAMIC_HOST_RE = re.compile(
    r"(?:\d+[-.]\d+[-.]\d+[-.]\d+|dsl|dial|ppp|pool|dyn|cable|dhcp|modem|client|\bhost\d)",
    re.IGNORECASE,
)
_PRIVATE_IP_RE = re.compile(r"^(?:127\.|10\.|192\.168\.|172\.(?:1[6-9]|2\d|3[01])\.)")
_ID_TAIL_RE = re.compile(r"(?:\s{3,}|[\[(#])(?=[a-z]*\d)(?=\d*[a-z])[a-z0-9]{4,}[\])]?$", re.I)
_FONT_SIZE_RE = re.compile(r"<font[^>]{0,80}?size\s*=\s*[\"']?\s*(\+?\d)", re.IGNORECASE)
_CSS_SIZE_RE = re.compile(r"font-size\s*:\s*(\d{1,3})(px|pt)", re.IGNORECASE)
_ANCHOR_RE = re.compile(r"<a\s[^>]{0,400}?href\s*=\s*[\"']?([^\"'\s>]+)[^>]*>([^<]{0,200})<", re.I)
_URL_HOST_RE = re.compile(r"(?:https?|ftp)://([^\s/?#\"'<>]+)", re.IGNORECASE)
_DEAR_RE = re.compile(
    r"^\W{0,5}dear\s+(?:friend|sir|madam|member|customer|valued|user|entrepreneur|"
    r"homeowner|business|sir/madam|account holder)",
    re.IGNORECASE,
)
_LETTER_RE = re.compile(r"[A-Za-z]")


def _domain(address: str) -> str:
    return address.rsplit("@", 1)[-1].strip(" >.").lower() if "@" in address else ""


def _zone_absurd(date_value: str) -> bool:
    """A ``+hhmm`` zone beyond +-14 h, or with minutes no zone on earth uses."""
    m = _ZONE_RE.search(date_value[-40:])
    if not m:
        return False
    hours, minutes = int(m.group(2)), int(m.group(3))
    return hours > 14 or minutes not in (0, 15, 30, 45)


def _relay_signs(received: Sequence[str]) -> set[str]:
    """Signs of the relay that handed the message in (the newest hop from a public address,
    the one a sender cannot forge): a dynamic-looking host name, a HELO that is a bare IP or
    has no dot, a HELO IP other than the connecting one; and absurd zones in any stamp."""
    out: set[str] = set()
    judged = False
    for line in received[:MAX_RECEIVED]:
        line = line[:_HEAD]
        if ";" in line and _zone_absurd(line.rsplit(";", 1)[1]):
            out.add("received_zone_absurd")
        if judged:
            continue
        m = _FROM_PART_RE.match(line)
        if not m:
            continue
        helo, detail = m.group(1).strip("[]").lower(), m.group(2)
        ips = _IPV4_RE.findall(detail)
        if not ips or _PRIVATE_IP_RE.match(ips[-1]):
            continue  # a local hop: the collector's own fetchmail, an internal relay
        judged = True
        rdns = detail.split("[", 1)[0].strip().lower().rsplit("@", 1)[-1]
        named = rdns and rdns != "unknown" and not _IPV4_RE.fullmatch(rdns)
        if named and _DYNAMIC_HOST_RE.search(rdns):
            out.add("relay_dynamic_host")
        if _IPV4_RE.fullmatch(helo):
            out.add("relay_helo_bare")
            if helo != ips[-1]:
                out.add("relay_helo_ip_mismatch")
        elif "." not in helo and helo not in ("localhost", "unknown"):
            out.add("relay_helo_bare")
    return out


def header_signs(
    get,
    received: Sequence[str],
    *,
    sender: str,
    sender_domain: str,
    reply_to: str,
    html_only: bool,
    skew_hours: float | None,
    date_present: bool,
    date_parsed: bool,
    raw_subject: str,
    subject: str,
    url_domains: Iterable[str],
) -> set[str]:
    """Signs from the header block. ``get(name)`` returns the first value of a lower-case
    header name as text, or ``""``; ``skew_hours`` is delivery time minus Date (None when
    either is unknown)."""
    out: set[str] = set()
    freemail = sender_domain in FREEMAIL_DOMAINS
    if freemail:
        out.add("freemail_from")
        names = _FREEMAIL_RELAY_NAMES.get(sender_domain)
        if names and received:
            text = " ".join(r[:_HEAD] for r in received[:MAX_RECEIVED]).lower()
            if not any(n in text for n in names):
                out.add("freemail_relay_missing")
    reply_domain = _domain(reply_to)
    if reply_domain in FREEMAIL_DOMAINS and reply_to.lower() != sender:
        out.add("freemail_reply_to_differs")
    envelope = get("return-path")[:_HEAD].strip("<> \t").lower()
    if _domain(envelope) in FREEMAIL_DOMAINS and envelope.split("@")[0][-1:].isdigit():
        out.add("freemail_envelope_digits")

    msgid = get("message-id")[:_HEAD].strip()
    mailer = (get("x-mailer") or get("user-agent"))[:_HEAD].lower()
    outlook = "outlook" in mailer and "microsoft" in mailer
    if not msgid:
        out.add("msgid_missing")
    elif not _MSGID_RE.search(msgid):
        out.add("msgid_malformed")
    else:
        oe = _OE_MSGID_RE.search(msgid)
        # Outlook's ids start with a FILETIME: digits 5-7 are "01c" for 1997-2010.
        if oe and oe.group(1)[4:7].lower() != "01c":
            out.add("msgid_outlook_random")
        if oe and oe.group(0) != oe.group(0).lower():
            out.add("msgid_outlook_uppercase")
        id_domain = _MSGID_DOMAIN_RE.search(msgid)
        if id_domain and sender_domain and id_domain.group(1).lower().endswith(sender_domain):
            out.add("msgid_sender_domain")
    if outlook:
        if not get("x-mimeole"):
            out.add("outlook_no_mimeole")
        if html_only:
            out.add("outlook_html_only")

    date_value = get("date")[:_HEAD]
    if date_present and not date_parsed:
        out.add("date_invalid")
    if date_value and _zone_absurd(date_value):
        out.add("date_zone_absurd")
    if skew_hours is not None:
        if skew_hours < -3:
            out.add("date_future")
        elif skew_hours > 96:
            out.add("date_past_4d")
        elif skew_hours > 12:
            out.add("date_past_12h")
    if not received:
        out.add("received_none")
    out |= _relay_signs(received)
    if received and all(_local_hop(r) for r in received[:MAX_RECEIVED]):
        out.add("local_delivery")

    to = get("to")[:_HEAD]
    if not to.strip():
        out.add("to_missing")
    elif "undisclosed" in to.lower():
        out.add("to_undisclosed")
    if (to + "," + get("cc")[:_HEAD]).count("@") > 10:
        out.add("many_recipients")

    letters = _LETTER_RE.findall(subject)
    if len(letters) >= 10 and subject.upper() == subject:
        out.add("subject_all_caps")
    if any(ord(c) > 127 for c in raw_subject[:_HEAD]) and "=?" not in raw_subject:
        out.add("subject_raw_8bit")
    # the raw value: the parsed subject has its runs of spaces collapsed, and a wide gap
    # before a random tag is part of the pattern
    if _ID_TAIL_RE.search(raw_subject[:_HEAD].strip()[-40:]) or _ID_TAIL_RE.search(subject[-40:]):
        out.add("subject_id_tail")
    if "=?" in get("from")[:_HEAD]:
        out.add("from_encoded")
    if get("content-type") and not get("mime-version"):
        out.add("mime_no_version")

    if get("list-id") or get("list-unsubscribe") or get("list-post"):
        out.add("list_headers")
    if get("precedence").strip().lower() in ("bulk", "list", "junk"):
        out.add("bulk_precedence")
    if get("in-reply-to") or get("references"):
        out.add("in_reply")
    if sender_domain and sender_domain in set(url_domains):
        out.add("sender_domain_in_urls")
    return out


def _local_hop(line: str) -> bool:
    """A ``Received:`` line whose sending side is loopback or a private address."""
    m = _FROM_PART_RE.match(line[:_HEAD])
    if not m:
        return False
    ips = _IPV4_RE.findall(m.group(2))
    return bool(ips) and bool(_PRIVATE_IP_RE.match(ips[-1]))


def html_signs(html: str, visible_text: str, n_images: int) -> set[str]:
    """Signs of an HTML part's source: no ``<html>``, shouting or hidden font sizes, images
    with little text, a link whose text names another site."""
    out: set[str] = set()
    src = html[:HTML_SCAN]
    low = src.lower()
    if "<html" not in low:
        out.add("html_no_html_tag")
    for size in _FONT_SIZE_RE.findall(src):
        n, relative = int(size.lstrip("+")), size.startswith("+")
        if n >= (3 if relative else 6):
            out.add("html_font_big")
        elif not relative and n <= 1:
            out.add("html_font_tiny")
    for value, unit in _CSS_SIZE_RE.findall(src):
        n = int(value)
        if n <= (4 if unit.lower() == "px" else 3):
            out.add("html_font_tiny")
        elif n >= 36:
            out.add("html_font_big")
    if n_images and len(visible_text.strip()) < 400:
        out.add("html_images_little_text")
    for href, text in _ANCHOR_RE.findall(src):
        shown = _URL_HOST_RE.search(text)
        real = _URL_HOST_RE.search(href)
        if shown and real and _base(shown.group(1)) != _base(real.group(1)):
            out.add("html_link_text_mismatch")
            break
    return out


def _base(host: str) -> str:
    labels = host.lower().rsplit("@", 1)[-1].split(":")[0].strip(".").split(".")
    return ".".join(labels[-2:])


def url_signs(url_source: str) -> set[str]:
    """``http://user@host``, ``%``-escaped host names, hosts given as a bare IP."""
    out: set[str] = set()
    for host in _URL_HOST_RE.findall(url_source[:HTML_SCAN]):
        if "@" in host or "%" in host:
            out.add("url_obfuscated")
        elif _IPV4_RE.fullmatch(host.split(":")[0]):
            out.add("url_ip_host")
    return out


def text_signs(body: str) -> set[str]:
    out: set[str] = set()
    if len(body.strip()) < 20:
        out.add("empty_body")
    if _DEAR_RE.search(body[:300]):
        out.add("dear_generic")
    return out


def alt_text_differs(plain: str, html_text: str) -> bool:
    """``multipart/alternative`` whose text and HTML parts share few words: one is decoy."""
    a = set(plain[:5_000].lower().split())
    b = set(html_text[:5_000].lower().split())
    if len(a) < 5 or len(b) < 5:
        return len(a) + len(b) >= 10
    return len(a & b) / len(a | b) < 0.2


def sign_string(signs: Iterable[str], from_fields: bool) -> str:
    """Sorted, space-joined sign names in their canonical set (what the parser stores)."""
    keep = (s for s in signs if s in _SIGN_SET and not (from_fields and s in DELIVERY_SIGNS))
    return " ".join(sorted(keep))


_SIGN_SET = frozenset(SIGNS)
