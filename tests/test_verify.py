"""``llmos verify``: re-hash installed files, name each changed or missing one, exit 6."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.helpers.installtools import build_registry, use_registry

DOC_A = "alpha document\n"
DOC_B = "beta document\n"


@pytest.fixture
def installed(tmp_path, cli, llmos_home):
    reg = build_registry(
        tmp_path,
        [
            dict(name="va", files={"docs/a.md": DOC_A, "docs/common.md": "common\n"}),
            dict(name="vb", files={"docs/b.md": DOC_B, "docs/common.md": "common\n"}),
        ],
    )
    use_registry(cli, reg)
    r = cli("install", "va", "vb")
    assert r.exit_code == 0, r
    return llmos_home


def blob(home, text: str):
    h = hashlib.sha256(text.encode()).hexdigest()
    return home / "store" / h[:2] / h


def test_verify_clean(installed, cli):
    r = cli("verify")
    assert r.exit_code == 0, r
    assert "4 file(s) in 2 package(s) verified" in r.stderr
    d = cli("verify", "--json").json()["data"]
    assert d == {"ok": True, "packages": 2, "files": 4, "problems": []}


def test_verify_names_a_changed_file(installed, cli):
    p = blob(installed, DOC_A)
    os.chmod(p, 0o644)
    p.write_text("alpha documenT\n")  # same size, different bytes
    r = cli("verify")
    assert r.exit_code == 6, r
    assert "va 1.0.0: docs/a.md: changed" in r.stdout
    assert "vb" not in r.stdout
    assert "1 installed file(s) changed or missing" in r.stderr
    d = cli("verify", "--json")
    assert d.exit_code == 6
    probs = d.json()["data"]["problems"]
    assert [(x["package"], x["path"], x["problem"]) for x in probs] == [("va", "docs/a.md", "changed")]
    assert probs[0]["actual_sha256"] == hashlib.sha256(b"alpha documenT\n").hexdigest()


def test_verify_names_a_missing_file_in_every_package_that_has_it(installed, cli):
    blob(installed, "common\n").unlink()
    r = cli("verify", "--json")
    assert r.exit_code == 6, r
    probs = {(x["package"], x["path"], x["problem"]) for x in r.json()["data"]["problems"]}
    assert probs == {("va", "docs/common.md", "missing"), ("vb", "docs/common.md", "missing")}


def test_verify_only_named_packages(installed, cli):
    blob(installed, DOC_B).unlink()
    assert cli("verify", "va").exit_code == 0
    r = cli("verify", "vb")
    assert r.exit_code == 6 and "vb 1.0.0: docs/b.md: missing" in r.stdout


def test_verify_unknown_package(installed, cli):
    r = cli("verify", "nope")
    assert r.exit_code == 3, r
    assert "not installed" in r.stderr


def test_reinstalling_after_remove_restores_a_changed_file(installed, cli):
    p = blob(installed, DOC_B)
    os.chmod(p, 0o644)
    p.write_text("tampered\n")
    assert cli("verify").exit_code == 6
    assert cli("remove", "vb").exit_code == 0
    assert cli("install", "vb").exit_code == 0
    assert cli("verify").exit_code == 0
    assert p.read_text() == DOC_B


def test_verify_with_nothing_installed(cli, llmos_home):
    r = cli("verify", "--json")
    assert r.exit_code == 0
    assert r.json()["data"]["files"] == 0
