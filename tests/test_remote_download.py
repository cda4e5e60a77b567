"""Downloads over a real loopback HTTP server: resume, verify, refuse, time out."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager

import pytest

from llmos_cli.errors import IntegrityError, NetworkError, NotFoundError
from llmos_cli.progress import NullReporter, RecordingReporter
from llmos_cli.registry.download import (
    HttpSettings,
    cache_name,
    clean_cache,
    download_to_cache,
    fetch_bytes,
    list_cache,
)
from tests.helpers.httpserver import RegistryServer

FAST = HttpSettings(timeout=1.0, retries=1, backoff=0.0)


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    (root / "pool").mkdir(parents=True)
    data = os.urandom(3 * (1 << 20) + 123)  # a few chunks, not chunk-aligned
    (root / "pool" / "a.llmos").write_bytes(data)
    with RegistryServer(root) as srv:
        yield srv, data


def _get(srv, data, cache, settings=FAST, reporter=None):
    return download_to_cache(
        f"{srv.url}/pool/a.llmos",
        filename="pool/a.llmos",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        cache_dir=cache,
        settings=settings,
        reporter=reporter or RecordingReporter(),
    )


def test_download_verifies_and_is_cached(served, tmp_path):
    srv, data = served
    cache = tmp_path / "cache"
    path = _get(srv, data, cache)
    assert path.read_bytes() == data
    assert path.name == cache_name(hashlib.sha256(data).hexdigest(), "a.llmos")
    n = len(srv.requests)
    assert _get(srv, data, cache) == path  # second time: from the cache, no request
    assert len(srv.requests) == n
    assert not list(cache.glob("*.incomplete"))


def test_truncated_download_resumes_with_range(served, tmp_path):
    srv, data = served
    srv.cut["pool/a.llmos"] = 1_500_000
    rep = RecordingReporter()
    path = _get(srv, data, tmp_path / "cache", reporter=rep)
    assert path.read_bytes() == data
    assert srv.ranged("a.llmos") == ["bytes=1500000-"]


def test_partial_left_by_a_killed_run_is_resumed(served, tmp_path):
    srv, data = served
    cache = tmp_path / "cache"
    cache.mkdir()
    name = cache_name(hashlib.sha256(data).hexdigest(), "a.llmos")
    (cache / (name + ".incomplete")).write_bytes(data[:777_777])
    rep = RecordingReporter()
    path = _get(srv, data, cache, reporter=rep)
    assert path.read_bytes() == data
    assert srv.ranged("a.llmos") == ["bytes=777777-"]
    assert any("resuming" in m for _lvl, m in rep.messages)


def test_server_ignoring_range_restarts_cleanly(served, tmp_path):
    srv, data = served
    srv.no_range = True
    cache = tmp_path / "cache"
    cache.mkdir()
    name = cache_name(hashlib.sha256(data).hexdigest(), "a.llmos")
    (cache / (name + ".incomplete")).write_bytes(data[:1000])
    assert _get(srv, data, cache).read_bytes() == data


def test_tampered_archive_is_deleted(served, tmp_path):
    srv, data = served
    bad = bytearray(data)
    bad[12345] ^= 0xFF
    srv.replace["pool/a.llmos"] = bytes(bad)
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError, match="sha256 of a.llmos does not match"):
        _get(srv, data, cache)
    assert [p.name for p in cache.iterdir()] == [".lock"]


def test_more_bytes_than_declared_is_refused(served, tmp_path):
    srv, data = served
    srv.extra["pool/a.llmos"] = 4096
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError, match="more than the .* bytes the index declares"):
        _get(srv, data, cache)
    assert not list(cache.glob("*.incomplete"))
    assert not list(cache.glob("*.llmos"))


def test_declared_size_differs_is_refused_before_reading(served, tmp_path):
    srv, data = served
    srv.replace["pool/a.llmos"] = data + b"x"
    with pytest.raises(IntegrityError, match="server declares .* more than"):
        _get(srv, data, tmp_path / "cache")


def test_stalled_server_times_out_and_keeps_partial(served, tmp_path):
    srv, data = served
    srv.stall["pool/a.llmos"] = 1 << 20
    cache = tmp_path / "cache"
    with pytest.raises(NetworkError, match="failed after 2 attempts") as exc:
        _get(srv, data, cache, settings=HttpSettings(timeout=0.5, retries=1, backoff=0.0))
    assert "LLMOS_HTTP_TIMEOUT" in exc.value.hint
    # the first MiB arrived before the stall: kept for the next run, which resumes
    partial = list(cache.glob("*.incomplete"))
    assert len(partial) == 1 and partial[0].stat().st_size == 1 << 20
    srv.stall.clear()
    assert _get(srv, data, cache).read_bytes() == data
    assert srv.ranged("a.llmos")[-1] == f"bytes={1 << 20}-"


def test_missing_file_and_connection_refused(served, tmp_path):
    srv, data = served
    with pytest.raises(NotFoundError, match="HTTP 404"):
        download_to_cache(f"{srv.url}/pool/nope.llmos", filename="nope.llmos", size=1, sha256="0" * 64, cache_dir=tmp_path / "c", settings=FAST)
    assert fetch_bytes(f"{srv.url}/index.json.sig", missing_ok=True, settings=FAST) is None
    with pytest.raises(NetworkError, match="failed after 2 attempts"):
        fetch_bytes("http://127.0.0.1:9/index.json", settings=FAST)


def test_damaged_cache_copy_is_fetched_again(served, tmp_path):
    srv, data = served
    cache = tmp_path / "cache"
    path = _get(srv, data, cache)
    path.write_bytes(b"rot" + data[3:])
    rep = RecordingReporter()
    assert _get(srv, data, cache, reporter=rep).read_bytes() == data
    assert any("damaged" in m for lvl, m in rep.messages if lvl == "warning")


def test_cache_list_and_clean(served, tmp_path):
    srv, data = served
    cache = tmp_path / "cache"
    _get(srv, data, cache)
    (cache / "x.llmos.incomplete").write_bytes(b"12")
    rep = list_cache(cache)
    assert sorted((e.complete, e.size) for e in rep.entries) == [(False, 2), (True, len(data))]
    sim = clean_cache(cache, simulate=True)
    assert sim.total_bytes == len(data) + 2 and not sim.removed
    assert len(list_cache(cache).entries) == 2
    part = clean_cache(cache, incomplete_only=True)
    assert [e.file for e in part.entries] == ["x.llmos.incomplete"]
    assert [e.complete for e in list_cache(cache).entries] == [True]
    clean_cache(cache)
    assert list_cache(cache).entries == []


class _Counting(NullReporter):
    """Sums the bytes each progress task was advanced by."""

    def __init__(self):
        self.moved: dict[str, float] = {}

    @contextmanager
    def task(self, description, total=None, unit=""):
        moved = self.moved
        moved.setdefault(description, 0)

        class T:
            def advance(self, n=1):
                moved[description] += n

            def update(self, **kw):
                pass

        yield T()


def test_fetch_all_moves_one_total_bar(served, tmp_path):
    from llmos_cli.registry.download import fetch_all
    from llmos_cli.registry.http import HttpSource
    from llmos_cli.registry.index import IndexEntry
    from llmos_cli.state.db import SourceRow

    srv, data = served
    sha = hashlib.sha256(data).hexdigest()
    entry = IndexEntry.from_json({"name": "a", "version": "1.0", "kind": "library", "filename": "pool/a.llmos", "size": len(data), "sha256": sha})
    src = HttpSource(SourceRow("s", srv.url, "http", None, True, True, 0, "", None, None, None))
    rep = _Counting()
    cache = tmp_path / "cache"
    srv.cut["pool/a.llmos"] = 1000  # a resumed download still counts each byte once
    (path,) = fetch_all([(src, entry)], cache, rep)
    assert path.read_bytes() == data
    assert rep.moved == {"fetching 1 archive(s)": len(data), "a.llmos": len(data)}
    rep2 = _Counting()
    fetch_all([(src, entry)], cache, rep2)  # from the cache: the total still reaches the size
    assert rep2.moved == {"fetching 1 archive(s)": len(data)}
