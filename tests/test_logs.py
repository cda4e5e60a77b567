"""Prompt logs (``state/logs.py``): every run is logged to SQLite, can be read back, turned off, never holds keys."""

from __future__ import annotations

import json
import sqlite3

import pytest

from llmos_cli.errors import StateError
from llmos_cli.paths import Paths
from llmos_cli.state import logs


@pytest.fixture
def paths(tmp_path):
    return Paths(tmp_path / "home")


def _entry(prompt="What is X?", **kw):
    return logs.LogEntry(
        origin="run",
        prompt=prompt,
        answer="Y.",
        model="demo-chat",
        libraries=[{"name": "med-lib", "version": "1.0.0", "scale": 0.5}],
        citations=["[med-lib:a.md#1]"],
        usage={"completion_tokens": 2},
        timings={"total_s": 0.1},
        **kw,
    )


def test_write_and_read_back_newest_first(paths):
    for i in range(5):
        assert logs.write(paths, _entry(f"q{i}"))
    got = logs.read(paths, 3)
    assert [e.prompt for e in got] == ["q4", "q3", "q2"]
    assert len(logs.read(paths, 0)) == 5
    j = got[0].to_json()
    assert j["libraries"][0]["scale"] == 0.5 and j["citations"] == ["[med-lib:a.md#1]"] and j["origin"] == "run"
    assert j["time"].endswith("Z") and isinstance(j["id"], int)


def test_no_log_file_reads_empty(paths):
    assert logs.read(paths, 5) == []


def test_secrets_and_token_shapes_are_redacted(paths):
    e = _entry("my key is hunter2-secret and Bearer abc.def.ghi123 and sk-ABCDEFGHIJKLMNOP", system="key hunter2-secret")
    logs.write(paths, e, secrets=["hunter2-secret"])
    raw = sqlite3.connect(logs.log_path(paths)).execute("SELECT * FROM logs").fetchall()
    dump = json.dumps(raw)
    assert "hunter2-secret" not in dump and "abc.def.ghi123" not in dump and "sk-ABCDEFGHIJKLMNOP" not in dump
    assert "[redacted]" in logs.read(paths, 1)[0].prompt


def test_off_switch_marker_and_env(paths, monkeypatch):
    assert logs.enabled(paths)
    logs.set_enabled(paths, False)
    assert not logs.enabled(paths) and logs.off_marker(paths).exists()
    logs.set_enabled(paths, True)
    assert logs.enabled(paths)
    monkeypatch.setenv("LLMOS_NO_LOG", "1")
    assert not logs.enabled(paths)


def test_unwritable_log_is_false_not_an_error(paths):
    paths.home.mkdir(parents=True)
    logs.log_path(paths).mkdir()  # a directory where the database should be
    assert logs.write(paths, _entry()) is False


def test_newer_schema_and_corrupt_file_are_state_errors(paths):
    paths.home.mkdir(parents=True)
    c = sqlite3.connect(logs.log_path(paths))
    c.execute("PRAGMA user_version=99")
    c.close()
    with pytest.raises(StateError, match="newer"):
        logs.read(paths, 1)
    logs.log_path(paths).write_bytes(b"not a database at all" * 100)
    with pytest.raises(StateError):
        logs.read(paths, 1)
