"""Every accepted source form, and clear errors for the bad ones."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import mailbox
import tarfile
import threading
from functools import partial

import pytest

from spam_assets.lib.corpus_sources import CorpusError, read_sources
from spam_tests.helpers.corpus import write_apache_tarballs

SMALL = {"easy-ham-1": 6, "spam-2": 4}


def _mail(i: int) -> bytes:
    date = f"Tue, 01 Oct 2002 10:00:0{i % 10} +0000"
    return f"From: a{i}@b.com\nSubject: m{i}\nDate: {date}\n\nbody {i}\n".encode()


def test_npm_mirror_reads_exact_raw_bytes_not_json(shared_tgz, tmp_path):
    msgs = read_sources([str(shared_tgz)], tmp_path)
    assert len(msgs) == 6046
    by_group: dict[str, int] = {}
    for m in msgs:
        by_group[m.group] = by_group.get(m.group, 0) + 1
    assert by_group == {
        "easy-ham-1": 2500,
        "easy-ham-2": 1400,
        "hard-ham-1": 250,
        "spam-1": 500,
        "spam-2": 1396,
    }
    # file names carry the md5 of the original message: the .txt bytes reproduce it
    matches = sum(hashlib.md5(m.raw).hexdigest() == m.message_id.rsplit(".", 1)[1] for m in msgs)
    assert matches >= 6045
    assert {m.label for m in msgs if m.group.startswith("spam")} == {1}


def test_apache_tarballs(tmp_path, shared_tgz):
    paths = write_apache_tarballs(tmp_path / "apache", SMALL, shared_tgz)
    msgs = read_sources([str(p) for p in paths], tmp_path / "cache")
    assert sorted({m.group for m in msgs}) == ["easy-ham-1", "spam-2"]
    assert len(msgs) == 10
    assert all(m.message_id.startswith(m.group + "/") for m in msgs)


def test_http_download_is_cached(tmp_path, shared_tgz):
    paths = write_apache_tarballs(tmp_path / "www", SMALL, shared_tgz)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        urls = [f"http://127.0.0.1:{server.server_port}/{p.name}" for p in paths]
        msgs = read_sources(urls, tmp_path / "cache")
        assert len(msgs) == 10
        cached = sorted((tmp_path / "cache").iterdir())
        assert len(cached) == 2 and not any(p.suffix == ".part" for p in cached)
        with pytest.raises(CorpusError, match="download failed"):
            read_sources([urls[0].replace(paths[0].name, "missing.tar.bz2")], tmp_path / "cache")
    finally:
        server.shutdown()
    # served from the cache with the server gone
    assert len(read_sources(urls, tmp_path / "cache")) == 10


def test_maildir_eml_dir_and_mbox(tmp_path):
    md = mailbox.Maildir(str(tmp_path / "ham_maildir"), create=True)
    for i in range(3):
        md.add(_mail(i))
    eml = tmp_path / "my-spam"
    eml.mkdir()
    for i in range(2):
        (eml / f"{i}.eml").write_bytes(_mail(10 + i))
    box = mailbox.mbox(str(tmp_path / "inbox.mbox"))
    for i in range(4):
        box.add(_mail(20 + i))
    box.flush()
    msgs = read_sources(
        [str(tmp_path / "ham_maildir"), str(eml), f"ham:{tmp_path / 'inbox.mbox'}"], tmp_path
    )
    labels = {m.group: m.label for m in msgs}
    assert labels == {"ham_maildir": 0, "my-spam": 1, "inbox": 0}
    assert len(msgs) == 9
    assert b"body 21" in next(m.raw for m in msgs if m.message_id == "inbox/000001")


def test_missing_path_named(tmp_path):
    with pytest.raises(CorpusError, match=r"nope\.tar\.bz2: corpus source not found"):
        read_sources([str(tmp_path / "nope.tar.bz2")], tmp_path)


def test_corrupt_tarball_named(tmp_path, shared_tgz):
    good = write_apache_tarballs(tmp_path, {"spam-1": 20}, shared_tgz)[0]
    bad = tmp_path / "20030228_spam_broken.tar.bz2"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CorpusError, match=r"20030228_spam_broken\.tar\.bz2: .*(corrupt|readable)"):
        read_sources([str(bad)], tmp_path)
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"definitely not gzip")
    with pytest.raises(CorpusError, match=r"junk\.tgz: not a readable tar archive"):
        read_sources([str(junk)], tmp_path)


def test_empty_sources_named(tmp_path):
    empty = tmp_path / "empty_ham"
    empty.mkdir()
    with pytest.raises(CorpusError, match="empty_ham: source contains no messages"):
        read_sources([str(empty)], tmp_path)
    with pytest.raises(CorpusError, match="no corpus sources configured"):
        read_sources([], tmp_path)
    tar = tmp_path / "nothing.tar.bz2"
    with tarfile.open(tar, "w:bz2") as t:
        info = tarfile.TarInfo("README")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(CorpusError, match=r"nothing\.tar\.bz2: source contains no messages"):
        read_sources([str(tar)], tmp_path)


def test_unlabelled_source_asks_for_prefix(tmp_path):
    d = tmp_path / "inbox"
    d.mkdir()
    (d / "1.eml").write_bytes(_mail(1))
    with pytest.raises(CorpusError, match="prefix the source with 'spam:' or 'ham:'"):
        read_sources([str(d)], tmp_path)
    assert read_sources([f"spam:{d}"], tmp_path)[0].label == 1


def test_settings_parse_json_sources(monkeypatch):
    from spam_serving.settings import get_settings

    monkeypatch.setenv("SPAM_CORPUS_SOURCES", json.dumps(["spam:/x.mbox", "/y"]))
    monkeypatch.setenv("SPAM_TUNE_NUM_SAMPLES", "3")
    s = get_settings()
    assert s.corpus_sources == ["spam:/x.mbox", "/y"] and s.tune_num_samples == 3


def test_a_tar_is_streamed_without_keeping_every_members_header(tmp_path):
    """``tarfile`` keeps the TarInfo of every member it has read (~1 KB each); a million-message
    archive must cost one message's memory, not a header per message."""
    import tracemalloc

    from spam_assets.lib.corpus_sources import iter_source

    def archive(n: int):
        path = tmp_path / f"gen-{n}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(n):
                raw = _mail(i)
                info = tarfile.TarInfo(f"pkg/data/spam-2/{i:06d}.txt")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
        return path

    def peak(n: int) -> int:
        path = archive(n)
        tracemalloc.start()
        count = sum(1 for _ in iter_source(str(path), tmp_path / "cache"))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == n
        return top

    small, large = peak(200), peak(4_000)
    assert large < small + 200_000  # 3,800 more headers kept would be ~3 MB
