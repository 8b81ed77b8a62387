"""A labelled corpus of any size, made from the real one, for ``make bench-scale``.

Every generated message starts from a real message of the same group (so the label, the
period the split protocol reads from the group name, and the MIME/HTML/header structure are
real) and is varied so that de-duplication keeps it: a new sender, recipient and Message-ID;
every date in the headers moved by the same offset (up to ``SHIFT_DAYS`` either way, so the
delivery clock stays consistent); URL hosts replaced; words of the subject and of the text
lines of the body replaced by words drawn from the corpus's vocabulary; and, for plain
single-part bodies, a paragraph of another message of the same group appended.
Encoded lines (base64), MIME delimiters and part headers are left alone, so the structure
parses as the original did.

What it cannot show: quality. The words are shuffled within a label, so a model trained on
this learns nothing about real mail; the benchmark uses it for time and memory only.

Written as a plain ``.tar`` in the npm mirror's layout (``package/data/<group>/<id>.txt``),
which the project reads as any other corpus source. ``python -m benchmarks.scale_corpus N
OUT.tar`` writes one.
"""

from __future__ import annotations

import io
import random
import re
import sys
import tarfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from spam_assets.lib.corpus_sources import iter_source

SHIFT_DAYS = 90
_WORD = re.compile(rb"\b[A-Za-z]{4,12}\b")
_URL_HOST = re.compile(rb"(?i)(https?://)([a-z0-9.-]+)")
_DATE = re.compile(
    rb"(?:(Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d)"
)
_BASE64_LINE = re.compile(rb"^[A-Za-z0-9+/=]{40,}$")
_FIRST_NAMES = (b"Alex", b"Sam", b"Jo", b"Chris", b"Pat", b"Robin", b"Kim", b"Lee", b"Max", b"Ann")
_TLDS = (b"com", b"net", b"org", b"biz", b"info", b"co.uk", b"de", b"io")


def _headers_body(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """Header block, the blank line's separator and the body (LF or CRLF mail)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0:
            return raw[:i], sep, raw[i + len(sep) :]
    return raw, b"", b""


class Generator:
    """Deterministic for a given seed and source corpus."""

    def __init__(self, source: str | Path, seed: int = 0) -> None:
        self.by_group: dict[str, list[bytes]] = defaultdict(list)
        for msg in iter_source(str(source), Path("/tmp")):
            self.by_group[msg.group].append(msg.raw)
        words: set[bytes] = set()
        for raws in self.by_group.values():
            for raw in raws[:300]:
                words.update(w.lower() for w in _WORD.findall(raw[:20000]))
        self.vocab = sorted(words)
        self.rng, self.seed = random.Random(seed), seed
        total = sum(len(v) for v in self.by_group.values())
        self.shares = {g: len(v) / total for g, v in sorted(self.by_group.items())}

    def messages(self, n: int) -> Iterator[tuple[str, bytes]]:
        """``n`` (group, raw) pairs, the groups in the real corpus's proportions."""
        groups = list(self.shares)
        weights = [self.shares[g] for g in groups]
        for i in range(n):
            group = self.rng.choices(groups, weights)[0]
            yield group, self.vary(group, i)

    # ------------------------------------------------------------------ one message
    def vary(self, group: str, i: int) -> bytes:
        rng = self.rng
        base = rng.choice(self.by_group[group])
        head, sep, body = _headers_body(base)
        eol = b"\r\n" if sep == b"\r\n\r\n" else b"\n"
        shift = timedelta(seconds=rng.randint(-SHIFT_DAYS * 86400, SHIFT_DAYS * 86400))
        host = self._host()
        head = self._headers(head, eol, shift, host, i)
        body = self._body(head, body, eol, host, group)
        return head + (sep or eol + eol) + body

    def _host(self) -> bytes:
        word = self.rng.choice(self.vocab)
        return b"%s%d.%s" % (word, self.rng.randint(1, 999), self.rng.choice(_TLDS))

    def _words(self, line: bytes, p: float) -> bytes:
        rng, vocab = self.rng, self.vocab

        def swap(m: re.Match) -> bytes:
            return rng.choice(vocab) if rng.random() < p else m.group(0)

        return _WORD.sub(swap, line)

    def _headers(self, head: bytes, eol: bytes, shift: timedelta, host: bytes, i: int) -> bytes:
        rng = self.rng
        sender = b"%s%d@%s" % (rng.choice(self.vocab), rng.randint(1, 9999), self._host())
        name = rng.choice(_FIRST_NAMES)
        out = []
        lines = head.split(eol)
        for line in lines:
            lower = line[:20].lower()
            if lower.startswith(b"from:"):
                line = b'From: "%s" <%s>' % (name, sender)
            elif lower.startswith(b"return-path:"):
                line = b"Return-Path: <%s>" % sender
            elif lower.startswith(b"message-id:"):
                line = b"Message-ID: <gen%d.%d@%s>" % (i, rng.randint(0, 1 << 30), host)
            elif lower.startswith(b"subject:"):
                line = b"Subject:" + self._words(line[8:], 0.4)
            line = _DATE.sub(lambda m: _shift_date(m, shift), line)
            out.append(line)
        return eol.join(out)

    def _body(self, head: bytes, body: bytes, eol: bytes, host: bytes, group: str) -> bytes:
        lines = body.split(eol)
        in_part_headers = False
        out = []
        for line in lines:
            stripped = line.strip()
            if line.startswith(b"--"):
                in_part_headers = True  # a MIME delimiter: the part's headers follow
                out.append(line)
                continue
            if in_part_headers:
                in_part_headers = bool(stripped)
                out.append(line)
                continue
            if _BASE64_LINE.match(stripped):
                out.append(line)
                continue
            line = _URL_HOST.sub(lambda m: m.group(1) + host, line)
            out.append(self._words(line, 0.15))
        text = eol.join(out)
        if b"multipart/" not in head.lower() and b"base64" not in head.lower():
            other = _headers_body(self.rng.choice(self.by_group[group]))[2]
            paragraph = other.split(eol + eol)[0][:1500]
            text = text.rstrip() + eol + eol + self._words(paragraph, 0.3) + eol
        return text


def _shift_date(m: re.Match, shift: timedelta) -> bytes:
    try:
        when = datetime.strptime(m.group(2).decode(), "%d %b %Y %H:%M:%S") + shift
    except ValueError:
        return m.group(0)
    text = when.strftime("%d %b %Y %H:%M:%S").lstrip("0").encode()
    return (when.strftime("%a, ").encode() + text) if m.group(1) else text


def write_tar(generator: Generator, n: int, out: Path) -> Path:
    """``n`` messages as a plain tar in the npm mirror layout (written atomically)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for i, (group, raw) in enumerate(generator.messages(n)):
            # the seed in the name: corpora made with different seeds never share an id
            info = tarfile.TarInfo(f"package/data/{group}/s{generator.seed}-{i:08d}.txt")
            info.size, info.mtime = len(raw), 1_000_000_000
            tar.addfile(info, io.BytesIO(raw))
    tmp.replace(out)
    return out


def main() -> None:
    from spam_serving.settings import get_settings

    n, out = int(sys.argv[1]), Path(sys.argv[2])
    source = get_settings().corpus_sources[0]
    write_tar(Generator(source, seed=n), n, out)
    print(f"wrote {n} messages to {out} ({out.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
