"""Read raw RFC822 messages from every corpus source we accept, with errors that name the file.

Sources (one string each):

* ``https://.../20030228_easy_ham.tar.bz2``: official Apache public-corpus tarballs, downloaded
  once into a cache keyed by URL;
* a local ``.tar.bz2`` / ``.tgz`` / ``.tar.gz`` / ``.tar``: Apache layout (``easy_ham/00001.x``)
  or the npm mirror (``package/data/easy-ham-1/00001.x.txt`` + ``.json``; we read the ``.txt``,
  the exact raw bytes, never the lossy JSON ``text`` field);
* a maildir (``cur/`` + ``new/``), a directory of ``.eml`` files (recursively), or an mbox file.

Apache group names are normalised to the mirror's (``easy_ham`` -> ``easy-ham-1``). A source
whose name does not say ham or spam takes a ``spam:``/``ham:`` prefix.
"""

from __future__ import annotations

import hashlib
import mailbox
import re
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

APACHE_GROUPS = {
    "easy_ham": "easy-ham-1",
    "easy_ham_2": "easy-ham-2",
    "hard_ham": "hard-ham-1",
    "hard_ham_2": "hard-ham-2",
    "spam": "spam-1",
    "spam_2": "spam-2",
}
_MESSAGE_NAME_RE = re.compile(r"^\d{5}\.[0-9a-f]{32}$")


class CorpusError(Exception):
    """A source cannot be read; the message names the source and the problem."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    message_id: str
    group: str
    label: int  # 1 = spam, 0 = ham
    source: str
    raw: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def label_for(group: str, explicit: str | None, source: str) -> int:
    """Label from an explicit prefix, else from the group name; unknown is an error."""
    name = (explicit or group).lower()
    if "spam" in name:
        return 1
    if "ham" in name:
        return 0
    raise CorpusError(
        f"{source}: cannot tell ham from spam for group {group!r}; "
        "prefix the source with 'spam:' or 'ham:'"
    )


def split_spec(spec: str) -> tuple[str | None, str]:
    """``'spam:/x.mbox'`` -> ``('spam', '/x.mbox')``; URLs and bare paths have no label."""
    for prefix in ("spam:", "ham:"):
        if spec.startswith(prefix):
            return prefix[:-1], spec[len(prefix) :]
    return None, spec


def download(url: str, cache_dir: Path, timeout: float) -> Path:
    """Fetch a URL once into ``cache_dir`` (atomic rename, so a broken download is not cached)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = PurePosixPath(url.split("?", 1)[0]).name or "download"
    target = cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"
    if target.exists():
        return target
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CorpusError(f"{url}: download failed: {exc}") from exc
    tmp.replace(target)
    return target


def _tar_messages(path: Path, explicit: str | None) -> Iterator[RawMessage]:
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed in finally; open errors differ)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CorpusError(f"{path}: not a readable tar archive ({exc})") from exc
    try:
        # ``for member in tar`` keeps every member's TarInfo in ``tar.members`` (~1 KB each:
        # ~1 GB at a million messages); read one header at a time and forget it instead
        while (member := tar.next()) is not None:
            tar.members = []
            if not member.isfile():
                continue
            parts = PurePosixPath(member.name).parts
            if len(parts) < 2:
                continue
            group_dir, name = parts[-2], parts[-1]
            if "data" in parts[:-2] and name.endswith(".txt"):  # npm mirror layout
                group, msg_name = group_dir, name[: -len(".txt")]
            elif group_dir in APACHE_GROUPS and _MESSAGE_NAME_RE.match(name):
                group, msg_name = APACHE_GROUPS[group_dir], name
            else:
                continue  # cmds files, JSON twins, package metadata
            f = tar.extractfile(member)
            if f is None:
                continue
            yield RawMessage(
                message_id=f"{group}/{msg_name}",
                group=group,
                label=label_for(group, explicit, str(path)),
                source=str(path),
                raw=f.read(),
            )
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise CorpusError(f"{path}: archive is corrupt or truncated ({exc})") from exc
    finally:
        tar.close()


def _mbox_messages(path: Path, explicit: str | None) -> Iterator[RawMessage]:
    group = path.stem
    label = label_for(group, explicit, str(path))
    box = mailbox.mbox(str(path), create=False)
    try:
        for key in box.iterkeys():
            yield RawMessage(f"{group}/{key:06d}", group, label, str(path), box.get_bytes(key))
    finally:
        box.close()


def _dir_messages(path: Path, explicit: str | None) -> Iterator[RawMessage]:
    group = path.name
    label = label_for(group, explicit, str(path))
    if (path / "cur").is_dir() or (path / "new").is_dir():
        box = mailbox.Maildir(str(path), factory=None, create=False)
        for key in sorted(box.iterkeys()):
            yield RawMessage(f"{group}/{key}", group, label, str(path), box.get_bytes(key))
        return
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.name.startswith(".") or file.suffix in (".json", ".js", ".md"):
            continue
        rel = file.relative_to(path).as_posix()
        yield RawMessage(f"{group}/{rel}", group, label, str(path), file.read_bytes())


def iter_source(spec: str, cache_dir: Path, timeout: float = 120.0) -> Iterator[RawMessage]:
    """Yield every message of one source spec; :class:`CorpusError` names what is wrong."""
    explicit, location = split_spec(spec)
    if location.startswith(("http://", "https://")):
        path = download(location, cache_dir, timeout)
    else:
        path = Path(location).expanduser()
        if not path.exists():
            raise CorpusError(f"{location}: corpus source not found")
    if path.is_dir():
        yield from _dir_messages(path, explicit)
    elif tarfile.is_tarfile(path) or path.name.endswith((".tar.bz2", ".tgz", ".tar.gz", ".tar")):
        yield from _tar_messages(path, explicit)
    else:
        head = path.read_bytes()[:5]
        if head != b"From ":
            raise CorpusError(f"{path}: not a tar archive, maildir, directory or mbox file")
        yield from _mbox_messages(path, explicit)


def read_sources(specs: list[str], cache_dir: Path, timeout: float = 120.0) -> list[RawMessage]:
    """All messages from all sources, first occurrence of a message id wins."""
    if not specs:
        raise CorpusError("no corpus sources configured (SPAM_CORPUS_SOURCES is empty)")
    seen: set[str] = set()
    out: list[RawMessage] = []
    for spec in specs:
        count = 0
        for msg in iter_source(spec, cache_dir, timeout):
            count += 1
            if msg.message_id not in seen:
                seen.add(msg.message_id)
                out.append(msg)
        if count == 0:
            raise CorpusError(f"{spec}: source contains no messages")
    return out
