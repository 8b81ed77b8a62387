"""RFC822 bytes -> :class:`ParsedMessage`, robust to the broken mail a spam filter lives on.

Why not ``email.policy.default``: it is 4-5x slower than ``compat32`` and raises ``LookupError``
on unknown charsets inside ``get_content()``. Broken mail is normal input here, so this module
uses the fast ``compat32`` parser, decodes payloads itself with charset fallbacks, and records
problems in ``parse_error`` instead of raising. The same function runs at training time (the
``parsed_messages`` asset) and in the BentoML service, so both see identical fields.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from typing import AnyStr

from selectolax.lexbor import LexborHTMLParser as HTMLParser

from spam_serving import signs as _signs

MAX_RAW_BYTES = 2_000_000
"""Raw messages above this are cut before parsing (flagged ``truncated``)."""
MAX_BODY_CHARS = 100_000
"""Body text above this is cut (flagged ``truncated``); spam signal lives at the start."""

# Bounds on what an adversary can make one message cost (docs/decisions/hostile-bounds.md).
# Each cuts the input, never rejects it, and flags ``truncated``; the real corpus stays far
# below every one of them (its largest header block is 15 KB, its most parts 22 lines
# starting with "--", its most nested containers 9, its most HTML tags 2,306).
MAX_HEADER_BYTES = 131_072
"""Header block above this is cut at a line end: 100k header lines cost a parse 200 ms.
Twice :data:`_HEAD_SCAN`, so the single-part fast path's fallback stays reachable."""
MAX_MIME_BOUNDARY_LINES = 1_000
"""Lines starting with ``--`` (MIME delimiters) kept: each part costs the parser ~20 µs."""
MAX_MIME_CONTAINERS = 50
"""``multipart/*`` and ``message/rfc822`` declarations kept: bounds nesting depth, which
otherwise ends the stdlib parser in ``RecursionError`` (2,000 levels) after 0.4 s."""
MAX_HTML_TAGS = 5_000
"""HTML handed to lexbor is cut before this many ``<``: its cost grows with the square of
nesting depth (10k nested ``<div>`` 0.1 s, 50k 3 s)."""
HOSTILE_BOUNDS: tuple[str, ...] = (
    "MAX_HEADER_BYTES",
    "MAX_MIME_BOUNDARY_LINES",
    "MAX_MIME_CONTAINERS",
    "MAX_HTML_TAGS",
)
"""Names of the bounds above (``make bench-hostile`` lifts them to measure what they save)."""

_PARSER = BytesParser(policy=compat32)
_HEAD_SCAN = 65_536
"""How far :func:`_parse_bytes` looks for the end of the header block."""
# Case-sensitive on purpose: it runs over lower-cased text, 3x faster than re.IGNORECASE.
_URL_RE = re.compile(r"""(?:https?|ftp)://([^\s/?#"'<>()\[\]:\\]+)""")
_IP_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_WS_RE = re.compile(r"\s+")
_HEADER_NAME_RE = re.compile(r"[^A-Za-z0-9-]")
_MAILER_SPLIT_RE = re.compile(r"[\s/(;,]")
_UNIXFROM_DATE_RE = re.compile(r"([A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d \d{4})")
_SECOND_LEVEL = {"co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go"}
# Headers that a collector (not the sender) adds, or that would leak a label; never tokens.
_SKIP_HEADER_PREFIXES = ("x-spam", "x-virus", "x-original", "delivered-to", "x-loop", "status")


@dataclass(slots=True)
class ParsedMessage:
    """Structured view of one mail message: the only input the featurizer reads."""

    subject: str = ""
    body: str = ""
    sender: str = ""
    sender_domain: str = ""
    reply_to_domain: str = ""
    sent_at: datetime | None = None
    received_at: datetime | None = None
    is_html: bool = False
    html_only: bool = False
    html_chars: int = 0
    n_urls: int = 0
    url_domains: str = ""
    n_images: int = 0
    n_links: int = 0
    n_attachments: int = 0
    n_parts: int = 0
    n_received: int = 0
    has_message_id: bool = False
    header_tokens: str = ""
    truncated: bool = False
    defects: str | None = None
    parse_error: str | None = None
    content_hash: str = ""
    #: Rule-style evidence (``spam_serving.signs``): sorted, space-separated sign names.
    signs: str = ""
    #: Built from JSON fields (``message_from_fields``): no delivery headers to judge.
    from_fields: bool = False

    def to_record(self) -> dict:
        """Plain dict (Parquet row); :func:`from_record` is its exact inverse. A shallow copy:
        every field is a scalar, and ``dataclasses.asdict``'s deep copy cost ~170 µs per
        message on the request path (the inference log keeps each parsed message)."""
        return {name: getattr(self, name) for name in FIELD_NAMES}


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ParsedMessage))


def from_record(record: dict) -> ParsedMessage:
    """Rebuild a message from a Parquet/JSON row (extra columns ignored, NaN/NaT -> None)."""
    kwargs = {}
    for name in FIELD_NAMES:
        if name not in record:
            continue
        value = record[name]
        if name in ("sent_at", "received_at"):
            value = _as_datetime(value)
        elif name in ("parse_error", "defects") and not isinstance(value, str):
            value = None
        kwargs[name] = value
    return ParsedMessage(**kwargs)


def _as_datetime(value: object) -> datetime | None:
    if value is None or not hasattr(value, "year"):
        return None
    if hasattr(value, "to_pydatetime"):
        try:
            value = value.to_pydatetime()  # pandas Timestamp (NaT raises or returns NaT)
        except ValueError:
            return None
    if not isinstance(value, datetime) or value != value:  # NaT != NaT
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _clean(text: str) -> str:
    """Drop surrogate escapes that compat32 leaves for undecodable header bytes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset, falling back to utf-8 then latin-1; never raises."""
    for cs in (charset, "utf-8"):
        if not cs:
            continue
        try:
            return data.decode(cs)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return data.decode("latin-1")


def decode_header_value(value: object) -> str:
    """RFC2047 header -> text; bad encodings degrade to replacement characters."""
    if value is None:
        return ""
    raw = _clean(str(value))
    if "=?" not in raw:
        return _WS_RE.sub(" ", raw).strip()
    try:
        chunks = decode_header(raw)
    except Exception:  # email.errors.HeaderParseError and friends: keep the raw text
        return _WS_RE.sub(" ", raw).strip()
    out = []
    for chunk, cs in chunks:
        out.append(decode_bytes(chunk, cs) if isinstance(chunk, bytes) else chunk)
    return _WS_RE.sub(" ", "".join(out)).strip()


def registrable_domain(host: str) -> str:
    """Approximate eTLD+1 (``mail.foo.co.uk`` -> ``foo.co.uk``); IPs are returned as-is."""
    host = host.lower().strip(".").rsplit("@", 1)[-1]
    if _IP_RE.match(host):
        return host
    labels = host.split(".")
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        dt = dt.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return dt if 1980 <= dt.year <= 2100 else None


class _Headers:
    """First value per lower-cased header name, built in one pass over the message.

    ``Message.get`` scans and lower-cases every header on each call (~10 calls per message on
    the request path); values go through the message policy exactly as ``get`` returns them.
    """

    __slots__ = ("_fetch", "first", "n_received", "received")

    def __init__(self, msg: Message) -> None:
        self._fetch = msg.policy.header_fetch_parse
        self.first: dict[str, tuple[str, object]] = {}
        self.n_received = 0
        #: The first ``Received:`` values, newest first, as text (the signs read them).
        self.received: list[str] = []
        for name, value in msg.raw_items():
            key = name.lower()
            if key == "received":
                self.n_received += 1
                if len(self.received) < _signs.MAX_RECEIVED:
                    self.received.append(_clean(str(value)))
            if key not in self.first:
                self.first[key] = (name, value)

    def get(self, key: str, default: object = None) -> object:
        """``msg.get(key, default)`` for a lower-case ``key``."""
        hit = self.first.get(key)
        return default if hit is None else self._fetch(*hit)

    def text(self, key: str) -> str:
        """The first value of ``key`` as clean text, ``""`` when absent."""
        hit = self.first.get(key)
        return "" if hit is None else _clean(str(self._fetch(*hit)))


def _received_at(msg: Message, headers: _Headers) -> datetime | None:
    """Delivery time: the mbox ``From `` line, else the newest ``Received:`` header's date."""
    unixfrom = msg.get_unixfrom() or ""
    m = _UNIXFROM_DATE_RE.search(unixfrom)
    if m:
        try:
            return datetime.strptime(m.group(1).replace("  ", " "), "%a %b %d %H:%M:%S %Y").replace(
                tzinfo=UTC
            )
        except ValueError:
            pass
    received = headers.get("received")
    if received and ";" in str(received):
        return _parse_date(_clean(str(received)).rsplit(";", 1)[1].strip())
    return None


def _cut_before_nth(text: AnyStr, sep: AnyStr, n: int) -> AnyStr | None:
    """``text`` up to the ``n``-th occurrence of ``sep`` (0-based), ``None`` when there are not
    that many. ``count`` first: the common case costs one C-speed scan."""
    if text.count(sep) <= n:
        return None
    pos = -1
    for _ in range(n + 1):
        pos = text.find(sep, pos + 1)
    return text[:pos]


def _blank_line(raw: bytes, stop: int | None = None) -> int:
    """Offset of the newline that ends the header block (LF or CRLF), -1 when none."""
    found = [i for sep in (b"\n\n", b"\n\r\n") if (i := raw.find(sep, 0, stop)) >= 0]
    return min(found) if found else -1


_CONTAINER_RE = re.compile(rb"multipart/|message/rfc822")


def bound_raw(raw: bytes) -> tuple[bytes, bool]:
    """Cut a raw message to the structural bounds above; ``True`` when something was cut.

    Only the tail goes: the header block keeps its first :data:`MAX_HEADER_BYTES` (at a line
    end) and the body follows intact; past the :data:`MAX_MIME_BOUNDARY_LINES`-th delimiter
    line or the :data:`MAX_MIME_CONTAINERS`-th container declaration the rest of the message
    is dropped, which the parser sees as a multipart without its closing boundary (a defect,
    as with mail cut in transit). Cheap when nothing is cut: a few C-speed scans."""
    cut = False
    if len(raw) > MAX_HEADER_BYTES and _blank_line(raw, MAX_HEADER_BYTES + 3) < 0:
        end = _blank_line(raw)
        keep = raw.rfind(b"\n", 0, MAX_HEADER_BYTES) + 1
        raw = raw[:keep] + (raw[end + 1 :] if end >= 0 else b"\n")
        cut = True
    dashes = _cut_before_nth(raw, b"\n--", MAX_MIME_BOUNDARY_LINES)
    if dashes is not None:
        raw, cut = dashes + b"\n", True
    low = raw.lower()
    if low.count(b"multipart/") + low.count(b"message/rfc822") > MAX_MIME_CONTAINERS:
        starts = [m.start() for m in _CONTAINER_RE.finditer(low)]
        if len(starts) > MAX_MIME_CONTAINERS:
            pos = starts[MAX_MIME_CONTAINERS]
            raw, cut = raw[: raw.rfind(b"\n", 0, pos) + 1], True
    return raw, cut


def _html_to_text(html: str) -> tuple[str, int, int, bool]:
    """Visible text, image and link counts, and whether the HTML was cut to
    :data:`MAX_HTML_TAGS`; selectolax is ~20x faster than html.parser."""
    cut = _cut_before_nth(html, "<", MAX_HTML_TAGS)
    if cut is not None:
        html = cut
    tree = HTMLParser(html)
    n_images = len(tree.css("img"))
    n_links = len(tree.css("a[href]"))
    for node in tree.css("script, style, head"):
        node.decompose()
    root = tree.body or tree.root
    text = root.text(separator=" ") if root is not None else ""
    return text, n_images, n_links, cut is not None


def normalise_text(text: str) -> str:
    """Whitespace-collapsed text: the basis of the near-duplicate content hash.

    Same result as ``re.sub(r"\\s+", " ", text).strip()`` (``str.split`` and ``\\s`` agree on
    what whitespace is) at a third of the cost on a whole body."""
    return " ".join(text.split())


def content_hash(subject: str, body: str) -> str:
    """Hash of whitespace-normalised subject + body: re-sent copies collide, distinct mail not."""
    key = normalise_text(subject) + "\n" + normalise_text(body)
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def _header_tokens(msg: Message, headers: _Headers) -> list[str]:
    tokens = []
    for name in headers.first:
        if name.startswith(_SKIP_HEADER_PREFIXES):
            continue
        tokens.append("h:" + name)
    mailer = headers.get("x-mailer") or headers.get("user-agent")
    if mailer:
        word = _MAILER_SPLIT_RE.split(_clean(str(mailer)).strip().lower(), maxsplit=1)[0]
        if word:
            tokens.append("xm:" + word[:30])
    tokens.append("ct:" + msg.get_content_type())
    prio = headers.get("x-priority")
    if prio:
        tokens.append("prio:" + _clean(str(prio)).strip()[:1])
    return tokens


def _parse_bytes(raw: bytes) -> Message:
    """``compat32`` parse that hands a single-part body over whole instead of line by line.

    For a message that is neither ``multipart/*`` nor ``message/*``, the parser's body pass
    only splits the body into lines and joins them back into the payload string: with the
    filename shortcut below, skipping it saves 11% of a parse's instructions on this corpus
    (callgrind). Here the parser reads the header block alone (up to the
    first empty line, as a ``headersonly`` parse) and the rest of the bytes becomes the
    payload, decoded as the parser decodes it. Same headers, defects and payload as the full
    parse (a test holds that on real mail). Anything else takes the full parse: a header
    block that ends without an empty line (the parser then starts the body early), a
    multipart or message Content-Type. The byte test only spares a wasted header parse for
    mail that says ``multipart`` up front; the parsed Content-Type decides.
    """
    head_end = _header_block_end(raw)
    if head_end:
        head = raw[:head_end]
        lowered = head.lower()
        if b"multipart" not in lowered and b"message/" not in lowered:
            msg = _PARSER.parsebytes(head, headersonly=True)
            single = msg.get_content_maintype() not in ("multipart", "message")
            if single and msg.get_payload() == "":
                msg.set_payload(raw[head_end:].decode("ascii", "surrogateescape"))
                return msg
    return _PARSER.parsebytes(raw)


def _header_block_end(raw: bytes) -> int:
    """Offset just past the first empty line (LF or CRLF) within the scanned head, else 0."""
    ends = [
        i + n
        for sep, n in ((b"\n\n", 2), (b"\n\r\n", 3))
        if (i := raw.find(sep, 0, _HEAD_SCAN)) >= 0
    ]
    return min(ends) if ends else 0


def _may_name_file(part: Message, disposition: str) -> bool:
    """False when ``part.get_filename()`` cannot find a name: it reads a ``filename`` (or
    ``name``) parameter, in every RFC 2231 spelling, and none is present. The test is a
    substring check; the full parameter parse runs only when it may matter."""
    return "name" in disposition or "name" in str(part.get("Content-Type", "")).lower()


def parse_message(raw: bytes | str, *, from_fields: bool = False) -> ParsedMessage:
    """Parse one raw RFC822 message. Never raises: problems land in ``parse_error``.

    ``from_fields``: the message was assembled from JSON fields (``message_from_fields``),
    so its missing delivery headers say nothing (no delivery sign is raised)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    out = ParsedMessage(from_fields=from_fields)
    if len(raw) > MAX_RAW_BYTES:
        raw = raw[:MAX_RAW_BYTES]
        out.truncated = True
    raw, cut = bound_raw(raw)
    out.truncated |= cut
    errors: list[str] = []
    try:
        msg = _parse_bytes(raw)
    except Exception as exc:  # the compat32 parser is lenient; this is a last resort
        out.parse_error = f"unparseable: {type(exc).__name__}"
        out.body = decode_bytes(raw[:MAX_BODY_CHARS], None)
        out.content_hash = content_hash("", out.body)
        return out

    headers = _Headers(msg)
    raw_subject = headers.text("subject")
    out.subject = decode_header_value(headers.get("subject"))
    name_addr = email.utils.parseaddr(_clean(str(headers.get("from", ""))))
    out.sender = name_addr[1].lower()
    if "@" in out.sender:
        out.sender_domain = registrable_domain(out.sender.rsplit("@", 1)[1])
    reply_to = email.utils.parseaddr(_clean(str(headers.get("reply-to", ""))))[1].lower()
    if "@" in reply_to:
        out.reply_to_domain = registrable_domain(reply_to.rsplit("@", 1)[1])
    out.sent_at = _parse_date(_clean(str(headers.get("date", ""))))
    out.received_at = _received_at(msg, headers)
    out.n_received = headers.n_received
    out.has_message_id = "message-id" in headers.first
    out.header_tokens = " ".join(sorted(_header_tokens(msg, headers)))

    plain: list[str] = []
    html: list[str] = []
    found: set[str] = set()
    for part in msg.walk():
        out.n_parts += 1
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = str(part.get("Content-Disposition", "")).lower()
        if (
            "attachment" in disposition
            or ctype.split("/")[0] not in ("text", "message")
            or (_may_name_file(part, disposition) and part.get_filename())
        ):
            out.n_attachments += 1
            continue
        _encoding_signs(part, found)
        try:
            payload = part.get_payload(decode=True)
        except Exception as exc:  # broken base64/quoted-printable
            errors.append(f"payload: {type(exc).__name__}")
            payload = None
        if payload is None:
            p = part.get_payload()
            payload = p.encode("utf-8", "surrogateescape") if isinstance(p, str) else b""
        text = decode_bytes(payload, part.get_content_charset())
        (html if ctype == "text/html" else plain).append(text)

    html_text = "\n".join(html)
    out.is_html = bool(html)
    out.html_only = bool(html) and not any(p.strip() for p in plain)
    out.html_chars = len(html_text)
    plain_text = "\n".join(plain)
    url_source = plain_text + "\n" + html_text
    url_source = url_source[: MAX_BODY_CHARS * 2].lower()
    domains = [registrable_domain(d) for d in _URL_RE.findall(url_source)]
    out.n_urls = len(domains)
    out.url_domains = " ".join(dict.fromkeys(domains))
    visible = ""
    if html_text:
        try:
            visible, out.n_images, out.n_links, cut = _html_to_text(html_text)
            out.truncated |= cut
        except Exception as exc:  # selectolax is robust, but never let HTML kill a request
            errors.append(f"html: {type(exc).__name__}")
            visible = re.sub(r"<[^>]*>", " ", html_text)
        found |= _signs.html_signs(html_text, visible, out.n_images)
        alternative = plain and msg.get_content_type() == "multipart/alternative"
        if alternative and _signs.alt_text_differs(plain_text, visible):
            found.add("html_alt_text_differs")
    body = visible if out.html_only else plain_text
    if len(body) > MAX_BODY_CHARS:
        body = body[:MAX_BODY_CHARS]
        out.truncated = True
    out.body = body
    defects = {type(d).__name__ for part in msg.walk() for d in part.defects}
    out.defects = ",".join(sorted(defects)) or None
    out.parse_error = "; ".join(errors) or None
    out.content_hash = content_hash(out.subject, out.body)
    skew = None
    if out.sent_at is not None and out.received_at is not None:
        skew = (out.received_at - out.sent_at).total_seconds() / 3600.0
    found |= _signs.header_signs(
        headers.text,
        headers.received,
        sender=out.sender,
        sender_domain=out.sender_domain,
        reply_to=reply_to,
        html_only=out.html_only,
        skew_hours=skew,
        date_present="date" in headers.first,
        date_parsed=out.sent_at is not None,
        raw_subject=raw_subject,
        subject=out.subject,
        url_domains=out.url_domains.split(),
    )
    found |= _signs.url_signs(url_source)
    found |= _signs.text_signs(out.body)
    out.signs = _signs.sign_string(found, from_fields)
    return out


def _encoding_signs(part: Message, found: set[str]) -> None:
    """Transfer-encoding signs of a text part: base64 text, over-long quoted-printable lines."""
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        found.add("text_base64")
    elif cte == "quoted-printable":
        payload = part.get_payload()
        if isinstance(payload, str) and any(
            len(line) > 78 for line in payload[: _signs.HTML_SCAN].splitlines()
        ):
            found.add("qp_long_lines")


def message_from_fields(
    subject: str = "", body: str = "", sender: str = "", headers: dict[str, str] | None = None
) -> ParsedMessage:
    """Build a message from JSON fields (the service's structured input) via the same parser.

    Going through :func:`parse_message` keeps one code path: a JSON request and the
    equivalent raw message produce the same features. Without a ``Received`` header the
    message is marked ``from_fields``: what delivery headers would say is absent, not
    suspicious (``spam_serving.signs``, ``spam_serving.featurize``).
    """
    skip = ("subject", "from", "content-type", "content-transfer-encoding", "mime-version")
    lines = [
        f"{_HEADER_NAME_RE.sub('', k)}: {_WS_RE.sub(' ', str(v))}"
        for k, v in (headers or {}).items()
        if k.lower() not in skip and _HEADER_NAME_RE.sub("", k)
    ]
    if sender:
        lines.append(f"From: {_WS_RE.sub(' ', sender)}")
    if subject:
        lines.append(f"Subject: {_WS_RE.sub(' ', subject)}")
    lines.append("Content-Type: text/plain; charset=utf-8")
    raw = ("\n".join(lines) + "\n\n" + body).encode("utf-8", "surrogateescape")
    # with its Received chain a JSON message is judged as the delivered mail it is
    delivered = any(k.lower() == "received" for k in (headers or {}))
    return parse_message(raw, from_fields=not delivered)
