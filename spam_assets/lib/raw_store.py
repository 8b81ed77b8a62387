"""The raw store: every corpus source landed as Parquet parts of at most ``chunk_rows``
messages, with a manifest of sources and parts.

Memory is bounded by one part, not by the corpus: messages stream from the source (tar,
maildir, mbox: see :mod:`spam_assets.lib.corpus_sources`) into a part that is written and
dropped when full. Each source is fingerprinted first (message id, label, sha256 of the raw
bytes, one pass that only hashes); a source whose fingerprint is the manifest's keeps its
parts untouched, so an unchanged corpus is a no-op and a new source lands only its own
parts, which is what lets ``parsed_messages`` parse only new mail.

A message id seen in an earlier source (or earlier in the same one) is skipped: the first
occurrence wins, as it always has.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from spam_assets.lib.corpus_sources import CorpusError, RawMessage, iter_source
from spam_assets.lib.files import write_atomic

PARTS_DIR = "parts"
MANIFEST_FILE = "manifest.json"
#: the single-file store of earlier versions, removed when the parts are written
LEGACY_FILE = "messages.parquet"
SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("group", pa.string()),
        ("label", pa.int8()),
        ("source", pa.string()),
        ("sha256", pa.string()),
        ("n_bytes", pa.int64()),
        ("raw", pa.binary()),
    ]
)


@dataclass(frozen=True)
class RawPart:
    """One Parquet file of the raw store."""

    id: str
    n_messages: int
    #: of the part's (message id, label, sha256) rows: a parsed part is valid for this value
    fingerprint: str
    per_group: dict[str, int]
    n_spam: int
    n_bytes: int


@dataclass(frozen=True)
class LandedSource:
    spec: str
    key: str
    fingerprint: str
    n_messages: int
    parts: tuple[RawPart, ...]


@dataclass(frozen=True)
class Landing:
    """What :func:`land` found and did."""

    sources: tuple[LandedSource, ...]
    fingerprint: str
    written: tuple[str, ...]  # specs whose parts were (re)written
    removed: tuple[str, ...]  # part ids of sources no longer configured

    @property
    def n_messages(self) -> int:
        return sum(s.n_messages for s in self.sources)

    @property
    def parts(self) -> list[RawPart]:
        return [p for s in self.sources for p in s.parts]

    @property
    def n_spam(self) -> int:
        return sum(p.n_spam for p in self.parts)

    @property
    def n_bytes(self) -> int:
        return sum(p.n_bytes for p in self.parts)

    @property
    def per_group(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self.parts:
            for group, n in part.per_group.items():
                out[group] = out.get(group, 0) + n
        return dict(sorted(out.items()))


def source_key(spec: str) -> str:
    """A stable, file-name-safe key for a source spec."""
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def part_path(raw_dir: Path, part_id: str) -> Path:
    return raw_dir / PARTS_DIR / f"{part_id}.parquet"


def _row_line(msg: RawMessage) -> bytes:
    return f"{msg.message_id}\t{msg.label}\t{msg.sha256}\n".encode()


def _new_messages(
    spec: str, cache_dir: Path, timeout: float, earlier: set[str], own: set[str]
) -> Iterator[RawMessage]:
    """The source's messages whose id no earlier source (nor an earlier copy here) had;
    ``own`` collects the ids yielded."""
    count = 0
    for msg in iter_source(spec, cache_dir, timeout):
        count += 1
        if msg.message_id in earlier or msg.message_id in own:
            continue
        own.add(msg.message_id)
        yield msg
    if count == 0:
        raise CorpusError(f"{spec}: source contains no messages")


def _fingerprint(
    spec: str, cache_dir: Path, timeout: float, earlier: set[str]
) -> tuple[str, set[str]]:
    """The fingerprint of what the source contributes, and the ids it contributes."""
    digest, own = hashlib.sha256(), set()
    for msg in _new_messages(spec, cache_dir, timeout, earlier, own):
        digest.update(_row_line(msg))
    return digest.hexdigest(), own


def _write_source(
    spec: str, key: str, fingerprint: str, raw_dir: Path, cache_dir: Path, timeout: float,
    earlier: set[str], chunk_rows: int,
) -> tuple[tuple[RawPart, ...], str]:  # fmt: skip
    """Stream the source into parts (one in memory at a time); returns them and the
    source's fingerprint (the same as :func:`_fingerprint`'s). Part ids carry the source's
    fingerprint, so a new version never overwrites the files the manifest names."""
    digest, parts, rows = hashlib.sha256(), [], []
    prefix = f"{key}-{fingerprint[:8]}"

    def flush() -> None:
        part_digest, per_group = hashlib.sha256(), {}
        for msg in rows:
            part_digest.update(_row_line(msg))
            per_group[msg.group] = per_group.get(msg.group, 0) + 1
        part = RawPart(
            f"{prefix}-{len(parts):05d}",
            len(rows),
            part_digest.hexdigest(),
            per_group,
            n_spam=sum(m.label for m in rows),
            n_bytes=sum(len(m.raw) for m in rows),
        )
        table = pa.Table.from_pydict(
            {
                "message_id": [m.message_id for m in rows],
                "group": [m.group for m in rows],
                "label": [m.label for m in rows],
                "source": [m.source for m in rows],
                "sha256": [m.sha256 for m in rows],
                "n_bytes": [len(m.raw) for m in rows],
                "raw": [m.raw for m in rows],
            },
            schema=SCHEMA,
        )
        write_atomic(part_path(raw_dir, part.id), lambda p: pq.write_table(table, p))
        parts.append(part)
        rows.clear()

    for msg in _new_messages(spec, cache_dir, timeout, earlier, set()):
        digest.update(_row_line(msg))
        rows.append(msg)
        if len(rows) >= chunk_rows:
            flush()
    if rows:
        flush()
    return tuple(parts), digest.hexdigest()


def read_manifest(raw_dir: Path) -> dict:
    path = raw_dir / MANIFEST_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _landed(entry: dict) -> LandedSource:
    return LandedSource(
        spec=entry["spec"],
        key=entry["key"],
        fingerprint=entry["fingerprint"],
        n_messages=entry["n_messages"],
        parts=tuple(RawPart(**p) for p in entry["parts"]),
    )


def land(
    specs: list[str], raw_dir: Path, cache_dir: Path, timeout: float, chunk_rows: int
) -> Landing:
    """Bring the raw store in line with ``specs``; only changed sources are rewritten.

    Every source is read (fingerprinted) before anything is written, so an unreadable one
    fails the landing with the store untouched. New parts get new names and the manifest
    is replaced before old parts are deleted: a crash at any point leaves a manifest whose
    parts all exist and hold what it says."""
    if not specs:
        raise CorpusError("no corpus sources configured (SPAM_CORPUS_SOURCES is empty)")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    raw_dir.mkdir(parents=True, exist_ok=True)
    previous = {e["key"]: _landed(e) for e in read_manifest(raw_dir).get("sources", [])}
    earlier: set[str] = set()
    plan = []
    for spec in specs:
        fingerprint, own = _fingerprint(spec, cache_dir, timeout, earlier)
        plan.append((spec, fingerprint, own))
        earlier |= own
    sources, written, before = [], [], set()
    for spec, fingerprint, own in plan:
        key = source_key(spec)
        old = previous.get(key)
        intact = old is not None and all(part_path(raw_dir, p.id).exists() for p in old.parts)
        if old is not None and intact and old.fingerprint == fingerprint:
            sources.append(old)
            before |= own
            continue
        parts, written_fp = _write_source(
            spec, key, fingerprint, raw_dir, cache_dir, timeout, before, chunk_rows
        )
        before |= own
        if written_fp != fingerprint:
            raise CorpusError(f"{spec}: source changed while it was read; run again")
        sources.append(
            LandedSource(spec, key, fingerprint, sum(p.n_messages for p in parts), parts)
        )
        written.append(spec)
    overall = hashlib.sha256(
        "".join(f"{s.key}:{s.fingerprint}\n" for s in sources).encode()
    ).hexdigest()
    live = {p.id for s in sources for p in s.parts}
    removed = sorted(p.id for s in previous.values() for p in s.parts if p.id not in live)
    landing = Landing(tuple(sources), overall, tuple(written), tuple(removed))
    if written or removed or read_manifest(raw_dir).get("fingerprint") != overall:
        manifest = {
            "fingerprint": overall,
            "n_messages": landing.n_messages,
            "per_group": landing.per_group,
            "chunk_rows": chunk_rows,
            "sources": [{**asdict(s), "parts": [asdict(p) for p in s.parts]} for s in sources],
        }
        write_atomic(
            raw_dir / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=1))
        )
    for path in (raw_dir / PARTS_DIR).glob("*.parquet"):  # replaced, or left by a crash
        if path.stem not in live:
            path.unlink()
    (raw_dir / LEGACY_FILE).unlink(missing_ok=True)
    return landing
