"""The ``--json`` contract: scripts depend on these keys.  Change them only on purpose (and bump JSON_SCHEMA)."""

from __future__ import annotations

import pytest

from llmos_cli import JSON_SCHEMA
from tests.helpers.installtools import build_registry, use_registry

ENVELOPE_OK = {"schema", "command", "ok", "data", "warnings"}
ENVELOPE_ERR = {"schema", "command", "ok", "error", "warnings"}
ERROR_KEYS = {"code", "exit_code", "message", "hint"}

INSTALLED_PKG = {
    "name",
    "version",
    "kind",
    "summary",
    "depends",
    "conflicts",
    "provides",
    "base",
    "auto",
    "held",
    "attached",
    "scale",
    "source",
    "installed_at",
}
ACTION = {"op", "name", "old_version", "new_version", "auto", "reason", "source"}
TX = {"command", "simulated", "txid", "plan", "stats", "payloads"}  # payloads: [[payload]] files fetched by hash (added in issue 13)
PLAN = {"actions", "unneeded"}
STATS = {"staged_files", "staged_bytes", "removed_blobs"}


@pytest.fixture
def reg(tmp_path, cli):
    r = build_registry(
        tmp_path,
        [
            dict(name="ja", files={"docs/a.md": "a\n"}),
            dict(name="jb", depends=["ja"], provides=["jvirt"], files={"docs/b.md": "b\n"}),
        ],
    )
    use_registry(cli, r)
    return r


def ok_data(r, command: str):
    assert r.exit_code == 0, r
    env = r.json()
    assert set(env) == ENVELOPE_OK
    assert env["schema"] == JSON_SCHEMA == "llmos/v1"
    assert env["command"] == command and env["ok"] is True
    assert isinstance(env["warnings"], list)
    return env["data"]


def test_error_envelope(reg, cli):
    r = cli("show", "nope", "--json")
    assert r.exit_code == 3
    env = r.json()
    assert set(env) == ENVELOPE_ERR
    assert env["ok"] is False and env["command"] == "show"
    assert ERROR_KEYS <= set(env["error"]) <= ERROR_KEYS | {"details"}
    assert env["error"]["code"] == "not_found" and env["error"]["exit_code"] == 3


def test_install_remove_upgrade_autoremove_shapes(reg, cli):
    for args, command in (
        (("install", "jb", "-y", "--json"), "install"),
        (("upgrade", "--json"), "upgrade"),
        (("remove", "jb", "-s", "--json"), "remove"),
        (("autoremove", "-s", "--json"), "autoremove"),
    ):
        d = ok_data(cli(*args), command)
        assert set(d) == TX
        assert set(d["plan"]) >= PLAN
        assert set(d["stats"]) == STATS
        for a in d["plan"]["actions"]:
            assert set(a) == ACTION
    d = ok_data(cli("install", "jb", "--json"), "install")  # nothing to do: same shape
    assert d["plan"]["actions"] == [] and d["txid"] is None


def test_list_shape(reg, cli):
    assert cli("install", "jb", "-y").exit_code == 0
    d = ok_data(cli("list", "--json"), "list")
    assert set(d) == {"kind", "packages"}
    assert [p["name"] for p in d["packages"]] == ["ja", "jb"]
    for p in d["packages"]:
        assert set(p) == INSTALLED_PKG | {"files"}


def test_show_shape(reg, cli):
    assert cli("install", "jb", "-y").exit_code == 0
    d = ok_data(cli("show", "jb", "--json"), "show")
    assert set(d) == {"name", "installed", "available", "provided_by", "required_by"}
    assert set(d["installed"]) == INSTALLED_PKG | {"license", "maintainer", "description", "archive_sha256", "files", "payloads"}
    assert set(d["installed"]["files"][0]) == {"path", "sha256", "size"}
    assert set(d["available"][0]) == {
        "name",
        "version",
        "kind",
        "summary",
        "depends",
        "conflicts",
        "provides",
        "base",
        "source",
        "filename",
        "size",
        "sha256",
        "installed",
        "payloads",
    }


def test_search_shape(reg, cli):
    d = ok_data(cli("search", "j", "--json"), "search")
    assert set(d) == {"query", "results"}
    assert set(d["results"][0]) == {"name", "version", "kind", "summary", "provides", "source", "installed"}


def test_history_shape(reg, cli):
    assert cli("install", "jb", "-y").exit_code == 0
    d = ok_data(cli("history", "--json"), "history")
    assert set(d) == {"transactions"}
    t = d["transactions"][0]
    assert set(t) == {"id", "started", "finished", "command", "argv", "status", "actions"}
    assert set(t["actions"][0]) == {"action", "name", "old_version", "new_version", "auto", "reason"}


def test_verify_shape(reg, cli):
    assert cli("install", "ja").exit_code == 0
    d = ok_data(cli("verify", "--json"), "verify")
    assert set(d) == {"ok", "packages", "files", "problems"}


def test_hold_shape(reg, cli):
    assert cli("install", "ja").exit_code == 0
    d = ok_data(cli("hold", "ja", "--json"), "hold")
    assert set(d) == {"command", "changed", "unchanged", "simulated", "txid"}
    d = ok_data(cli("unhold", "ja", "--json"), "unhold")
    assert d["changed"] == ["ja"]
