"""install / remove / upgrade / autoremove / hold / unhold / list / show / search / history flows.

Real archives built with ``build_package``, a real registry indexed with
``write_index`` and added with ``llmos source add``, a real state DB and store.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.helpers.installtools import archive_path, build_registry, check_consistent, snapshot, store_listing, use_registry

SHARED = "# shared\n\nThe same bytes in two packages.\n"

BASE_SET = [
    dict(name="kbase", kind="model"),
    dict(name="kdep", files={"docs/shared.md": SHARED, "docs/kdep.md": "kdep 1\n"}),
    dict(name="klib", depends=["kdep"], base="kbase", files={"docs/shared.md": SHARED, "docs/klib.md": "klib 1\n"}, summary="library about lichens"),
    dict(name="kalt", provides=["kvirt"], files={"docs/kalt.md": "kalt\n"}),
    dict(name="kuser", depends=["kvirt"], files={"docs/kuser.md": "kuser\n"}),
    dict(name="kfoe", conflicts=["klib"], files={"docs/kfoe.md": "kfoe\n"}),
]


@pytest.fixture
def reg(tmp_path, cli):
    r = build_registry(tmp_path, BASE_SET)
    use_registry(cli, r)
    return r


def add_versions(tmp_path, cli, reg, packages):
    build_registry(tmp_path / "v2", packages, reg=reg)
    r = cli("update")
    assert r.exit_code == 0, r


def listed(cli) -> dict[str, dict]:
    r = cli("list", "--json")
    assert r.exit_code == 0, r
    return {p["name"]: p for p in r.json()["data"]["packages"]}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_install_pulls_dependencies_and_marks_them_auto(reg, cli, llmos_home):
    r = cli("install", "klib", "-y", "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert data["simulated"] is False and isinstance(data["txid"], int)
    ops = {(a["op"], a["name"], a["new_version"], a["auto"]) for a in data["plan"]["actions"]}
    assert ops == {("install", "kbase", "1.0.0", True), ("install", "kdep", "1.0.0", True), ("install", "klib", "1.0.0", False)}
    pk = listed(cli)
    assert set(pk) == {"kbase", "kdep", "klib"}
    assert [pk[n]["auto"] for n in ("kbase", "kdep", "klib")] == [True, True, False]
    assert pk["klib"]["source"] == "test" and pk["klib"]["files"] == 2
    assert check_consistent(llmos_home) == {"kbase": "1.0.0", "kdep": "1.0.0", "klib": "1.0.0"}


def test_human_plan_is_apt_like_and_extra_packages_need_yes(reg, cli, llmos_home):
    before = snapshot(llmos_home)
    r = cli("install", "klib")  # stdin is no terminal: refuse, never hang
    assert r.exit_code == 18, r
    assert "The following NEW packages will be installed:" in r.stderr
    assert "kdep (1.0.0)" in r.stderr and "--yes" in r.stderr
    assert snapshot(llmos_home)["store"] == before["store"]
    assert listed(cli) == {}


def test_exactly_what_was_asked_needs_no_confirmation(reg, cli, llmos_home):
    r = cli("install", "kdep")
    assert r.exit_code == 0, r
    assert "Done (transaction" in r.stderr
    assert set(listed(cli)) == {"kdep"}


def test_simulate_changes_nothing_byte_for_byte(reg, cli, llmos_home):
    assert cli("install", "kdep").exit_code == 0
    db_bytes = (llmos_home / "state.db").read_bytes()
    before = snapshot(llmos_home)
    for args in (("install", "klib", "-s"), ("remove", "kdep", "-s"), ("upgrade", "-s"), ("autoremove", "-s"), ("hold", "kdep", "-s")):
        r = cli(*args)
        assert r.exit_code == 0, (args, r)
    r = cli("install", "klib", "--simulate", "--json")
    assert r.exit_code == 0
    data = r.json()["data"]
    assert data["simulated"] is True and data["txid"] is None
    assert [a["name"] for a in data["plan"]["actions"]] == ["kbase", "klib"]
    r = cli("install", "klib", "-s")
    assert "install klib (1.0.0) (requested) [test]" in r.stdout  # the exact plan on stdout
    assert "nothing was changed" in r.stderr
    assert (llmos_home / "state.db").read_bytes() == db_bytes
    assert snapshot(llmos_home) == before


def test_same_content_is_stored_once(reg, cli, llmos_home):
    assert cli("install", "klib", "-y").exit_code == 0
    blobs = store_listing(llmos_home)
    shared = f"store/{sha(SHARED)[:2]}/{sha(SHARED)}"
    assert shared in blobs
    # kbase model.gguf, shared.md, kdep.md, klib.md: 4 distinct blobs for 5 files
    assert len(blobs) == 4
    mode = (llmos_home / shared).stat().st_mode & 0o777
    assert mode == 0o444
    # removing one user keeps the blob; it goes with the last one
    r = cli("remove", "klib", "-y")
    assert r.exit_code == 0, r
    assert shared in store_listing(llmos_home)
    assert f"store/{sha('klib 1' + chr(10))[:2]}/{sha('klib 1' + chr(10))}" not in store_listing(llmos_home)
    r = cli("remove", "kdep", "kbase", "-y")
    assert r.exit_code == 0, r
    assert shared not in store_listing(llmos_home)
    check_consistent(llmos_home)


def test_remove_refuses_when_needed_and_names_the_dependent(reg, cli, llmos_home):
    assert cli("install", "klib", "-y").exit_code == 0
    before = snapshot(llmos_home)
    r = cli("remove", "kdep", "-y")
    assert r.exit_code == 17, r
    assert "klib" in r.stderr
    assert snapshot(llmos_home) == before
    # removing the dependent too is fine
    r = cli("remove", "kdep", "klib", "-y")
    assert r.exit_code == 0, r
    assert set(listed(cli)) == {"kbase"}


def test_autoremove_removes_unneeded_auto_packages(reg, cli, llmos_home):
    assert cli("install", "klib", "kalt", "-y").exit_code == 0
    r = cli("remove", "klib")
    assert r.exit_code == 0, r
    assert "no longer required" in r.stderr and "kdep" in r.stderr
    r = cli("autoremove")  # removals nobody named: apt asks first
    assert r.exit_code == 18, r
    r = cli("autoremove", "-y", "--json")
    assert r.exit_code == 0, r
    removed = {a["name"] for a in r.json()["data"]["plan"]["actions"] if a["op"] == "remove"}
    assert removed == {"kbase", "kdep"}
    assert set(listed(cli)) == {"kalt"}
    r = cli("autoremove", "-y")
    assert r.exit_code == 0 and "Nothing to do" in r.stderr
    check_consistent(llmos_home)


def test_requesting_an_auto_package_marks_it_manual(reg, cli, llmos_home):
    assert cli("install", "klib", "-y").exit_code == 0
    r = cli("install", "kdep", "--json")
    assert r.exit_code == 0, r
    assert [(a["op"], a["name"]) for a in r.json()["data"]["plan"]["actions"]] == [("mark-manual", "kdep")]
    assert listed(cli)["kdep"]["auto"] is False
    assert cli("remove", "klib").exit_code == 0
    r = cli("autoremove", "-y", "--json")
    assert {a["name"] for a in r.json()["data"]["plan"]["actions"]} == {"kbase"}
    assert set(listed(cli)) == {"kdep"}


def test_virtual_provides_satisfy_dependencies(reg, cli, llmos_home):
    r = cli("install", "kuser", "-y")
    assert r.exit_code == 0, r
    assert set(listed(cli)) == {"kuser", "kalt"}


def test_upgrade_named_then_all_and_old_blobs_are_collected(tmp_path, reg, cli, llmos_home):
    assert cli("install", "klib", "kalt", "-y").exit_code == 0
    old_blob = f"store/{sha('klib 1' + chr(10))[:2]}/{sha('klib 1' + chr(10))}"
    assert old_blob in store_listing(llmos_home)
    add_versions(
        tmp_path,
        cli,
        reg,
        [
            dict(name="klib", version="2.0.0", depends=["kdep>=2"], base="kbase", files={"docs/shared.md": SHARED, "docs/klib.md": "klib 2\n"}),
            dict(name="kdep", version="2.0.0", files={"docs/shared.md": SHARED, "docs/kdep.md": "kdep 2\n"}),
            dict(name="kalt", version="1.5.0", provides=["kvirt"], files={"docs/kalt.md": "kalt 1.5\n"}),
        ],
    )
    r = cli("upgrade", "klib", "-s", "--json")
    acts = {(a["op"], a["name"], a["old_version"], a["new_version"]) for a in r.json()["data"]["plan"]["actions"]}
    assert acts == {("upgrade", "klib", "1.0.0", "2.0.0"), ("upgrade", "kdep", "1.0.0", "2.0.0")}
    r = cli("upgrade", "klib", "-y")
    assert r.exit_code == 0, r
    assert "The following packages will be upgraded:" in r.stderr
    pk = listed(cli)
    assert (pk["klib"]["version"], pk["kdep"]["version"], pk["kalt"]["version"]) == ("2.0.0", "2.0.0", "1.0.0")
    assert pk["kdep"]["auto"] is True and pk["klib"]["auto"] is False  # marks survive an upgrade
    assert old_blob not in store_listing(llmos_home)
    r = cli("upgrade")  # only what was asked (every installed package): no confirmation
    assert r.exit_code == 0, r
    assert listed(cli)["kalt"]["version"] == "1.5.0"
    r = cli("upgrade", "-y")
    assert r.exit_code == 0 and "Nothing to do" in r.stderr
    check_consistent(llmos_home)


def test_hold_keeps_a_package_back_until_unheld(tmp_path, reg, cli, llmos_home):
    assert cli("install", "kalt").exit_code == 0
    r = cli("hold", "kalt", "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["changed"] == ["kalt"]
    assert listed(cli)["kalt"]["held"] is True
    r = cli("hold", "kalt")
    assert r.exit_code == 0 and "already held" in r.stderr
    add_versions(tmp_path, cli, reg, [dict(name="kalt", version="2.0.0", provides=["kvirt"], files={"docs/kalt.md": "kalt 2\n"})])
    r = cli("upgrade", "-y")
    assert r.exit_code == 0, r
    assert listed(cli)["kalt"]["version"] == "1.0.0"
    r = cli("unhold", "kalt")
    assert r.exit_code == 0, r
    assert listed(cli)["kalt"]["held"] is False
    assert cli("upgrade", "-y").exit_code == 0
    assert listed(cli)["kalt"]["version"] == "2.0.0"
    assert listed(cli)["kalt"]["held"] is False
    r = cli("hold", "nope")
    assert r.exit_code == 3, r


def test_install_a_local_archive_resolves_its_dependencies_from_sources(tmp_path, reg, cli, llmos_home, write_source):
    from llmos_cli.app.build import build_package

    src = write_source(tmp_path / "local", "kloc", depends=["kdep"], files={"docs/loc.md": "local\n"})
    res = build_package(src, tmp_path / "out")
    r = cli("install", str(res.path), "-y", "--json")
    assert r.exit_code == 0, r
    pk = listed(cli)
    assert set(pk) == {"kloc", "kdep"}
    assert pk["kloc"]["source"] == "local-archive" and pk["kloc"]["auto"] is False
    r = cli("show", "kloc", "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["installed"]["version"] == "1.0.0"


def test_install_an_archive_of_the_registry_by_path(reg, cli, llmos_home):
    r = cli("install", str(archive_path(reg, "kalt", "1.0.0")))
    assert r.exit_code == 0, r
    assert listed(cli)["kalt"]["version"] == "1.0.0"


def test_installing_twice_is_a_no_op(reg, cli, llmos_home):
    assert cli("install", "kdep").exit_code == 0
    hist = cli("history", "--json").json()["data"]["transactions"]
    r = cli("install", "kdep")
    assert r.exit_code == 0 and "Nothing to do" in r.stderr
    assert cli("history", "--json").json()["data"]["transactions"] == hist


def test_constraints_pick_the_version(tmp_path, reg, cli, llmos_home):
    add_versions(tmp_path, cli, reg, [dict(name="kalt", version="2.0.0", provides=["kvirt"], files={"docs/kalt.md": "kalt 2\n"})])
    assert cli("install", "kalt<2").exit_code == 0
    assert listed(cli)["kalt"]["version"] == "1.0.0"
    r = cli("install", "kalt>=2", "--json")  # an explicit newer constraint upgrades it
    assert r.exit_code == 0, r
    assert listed(cli)["kalt"]["version"] == "2.0.0"


def test_list_filters_by_kind(reg, cli, llmos_home):
    assert cli("install", "klib", "-y").exit_code == 0
    r = cli("list", "--kind", "model", "--json")
    assert [p["name"] for p in r.json()["data"]["packages"]] == ["kbase"]
    r = cli("list")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert any(line.split()[:3] == ["klib", "1.0.0", "library"] for line in lines)
    assert any(line.split()[:4] == ["kdep", "1.0.0", "library", "auto"] for line in lines)
    r = cli("list", "--kind", "gizmo")
    assert r.exit_code == 2, r


def test_show_installed_and_available(reg, cli, llmos_home):
    r = cli("show", "klib", "--json")
    assert r.exit_code == 0, r
    d = r.json()["data"]
    assert d["installed"] is None
    assert [a["version"] for a in d["available"]] == ["1.0.0"]
    assert d["available"][0]["depends"] == ["kdep"] and d["available"][0]["base"] == "kbase"
    assert cli("install", "klib", "-y").exit_code == 0
    d = cli("show", "klib", "--json").json()["data"]
    assert d["installed"]["version"] == "1.0.0" and d["installed"]["auto"] is False
    assert {f["path"] for f in d["installed"]["files"]} == {"docs/shared.md", "docs/klib.md"}
    assert d["available"][0]["installed"] is True
    d = cli("show", "kdep", "--json").json()["data"]
    assert d["required_by"] == ["klib"]
    d = cli("show", "kvirt", "--json").json()["data"]
    assert d["provided_by"] == ["kalt 1.0.0"]
    r = cli("show", "klib")
    assert "Package: klib" in r.stdout and "docs/klib.md" in r.stdout and "Depends: kdep" in r.stdout
    r = cli("show", "klibb")
    assert r.exit_code == 3 and "did you mean klib" in r.stderr


def test_search_matches_name_summary_provides(reg, cli, llmos_home):
    assert cli("install", "kalt").exit_code == 0
    r = cli("search", "lichen", "--json")
    assert [h["name"] for h in r.json()["data"]["results"]] == ["klib"]
    hits = {h["name"]: h for h in cli("search", "kvirt", "--json").json()["data"]["results"]}
    assert set(hits) == {"kalt"} and hits["kalt"]["installed"] == "1.0.0"
    r = cli("search", "KALT")
    assert "kalt 1.0.0 (library) [installed]" in r.stdout
    r = cli("search", "zzz-nothing")
    assert r.exit_code == 0 and "No packages match" in r.stderr


def test_history_records_every_change(reg, cli, llmos_home):
    assert cli("install", "klib", "-y").exit_code == 0
    assert cli("hold", "klib").exit_code == 0
    assert cli("unhold", "klib").exit_code == 0
    assert cli("remove", "klib").exit_code == 0
    r = cli("history", "--json")
    tr = r.json()["data"]["transactions"]
    assert [t["argv"] for t in tr] == [
        ["llmos", "remove", "klib"],
        ["llmos", "unhold", "klib"],
        ["llmos", "hold", "klib"],
        ["llmos", "install", "klib"],
    ]
    assert all(t["status"] == "done" and t["finished"] for t in tr)
    inst = tr[-1]["actions"]
    assert {(a["action"], a["name"], a["new_version"]) for a in inst} == {
        ("install", "kbase", "1.0.0"),
        ("install", "kdep", "1.0.0"),
        ("install", "klib", "1.0.0"),
    }
    assert [t["id"] for t in cli("history", "--limit", "1", "--json").json()["data"]["transactions"]] == [tr[0]["id"]]
    r = cli("history")
    assert "llmos install klib" in r.stdout and "done" in r.stdout


def test_json_error_envelope_on_failure(reg, cli, llmos_home):
    r = cli("install", "nosuchpkg", "--json")
    assert r.exit_code == 3
    env = r.json()
    assert env["ok"] is False and env["error"]["code"] == "not_found" and env["error"]["exit_code"] == 3
    json.dumps(env)


def test_confirmation_rule():
    """apt's rule: ask when the plan does anything the user did not name, or removes/downgrades unasked."""
    from llmos_cli.app.install import Proposal
    from llmos_cli.resolve import Action, Plan

    def act(op, name):
        return Action(op, name, "1.0.0", "2.0.0", None, False, "requested")

    def needs(command, requested, *acts):
        return Proposal(command, Plan(actions=list(acts), unneeded=[]), set(requested)).needs_confirmation

    assert not needs("install", {"a"}, act("install", "a"))
    assert needs("install", {"a"}, act("install", "a"), act("install", "b"))
    assert needs("install", {"a"}, act("install", "a"), act("remove", "c"))
    assert not needs("remove", {"a", "b"}, act("remove", "a"), act("remove", "b"))
    assert needs("autoremove", set(), act("remove", "a"))
    assert not needs("upgrade", {"a", "b"}, act("upgrade", "a"))
    assert needs("upgrade", {"a", "b"}, act("upgrade", "a"), act("remove", "b"))
    assert needs("upgrade", {"a"}, act("downgrade", "a"))
    assert not needs("install", {"a"}, act("downgrade", "a"))  # `install a<2` asked for it
