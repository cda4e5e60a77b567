"""ed25519 keys, index signatures and the trust policy applied by ``llmos update``."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta

import pytest

from llmos_cli.errors import TrustError, UsageError
from llmos_cli.progress import RecordingReporter
from llmos_cli.registry.index import INDEX_SCHEMA, Index, utc_iso
from llmos_cli.registry.signing import (
    check_index_trust,
    generate_key,
    key_id,
    resolve_private_key,
    sign_index,
    signature_key_ids,
    verify_index,
)
from llmos_cli.state.db import SourceRow

RAW = b'{"schema": 1, "created": "2026-01-01T00:00:00Z", "version": 3, "expires": null, "packages": []}\n'


@pytest.fixture
def keys(tmp_path):
    a = generate_key("alice", tmp_path / "keys")
    b = generate_key("bob", tmp_path / "keys")
    return a, b


def _row(key=None, allow_unsigned=False):
    return SourceRow("web", "http://127.0.0.1:1", "http", key, allow_unsigned, True, 0, "", None, None, None)


def _index(version=3, expires=None):
    return Index(INDEX_SCHEMA, "2026-01-01T00:00:00Z", version, expires, [])


def test_generate_key_files(keys, tmp_path):
    (priv, pub), _ = keys
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "alice.pub").read_text().strip() == pub
    doc = json.loads(priv.read_text())
    assert doc["public"] == pub and doc["type"] == "llmos-ed25519-private"
    with pytest.raises(UsageError, match="already exists"):
        generate_key("alice", tmp_path / "keys")
    with pytest.raises(UsageError, match="invalid key name"):
        generate_key("../evil", tmp_path / "keys")
    assert resolve_private_key("alice", tmp_path / "keys") == priv
    assert resolve_private_key(str(priv), tmp_path / "nowhere") == priv


def test_sign_and_verify(keys):
    (apriv, apub), (bpriv, bpub) = keys
    sig = sign_index(RAW, apriv)
    verify_index(RAW, sig, apub)  # no exception
    assert len(signature_key_ids(sig)) == 1
    with pytest.raises(TrustError, match="changed after it was signed"):
        verify_index(RAW.replace(b'"version": 3', b'"version": 4'), sig, apub)
    with pytest.raises(TrustError, match="not by the pinned key"):
        verify_index(RAW, sig, bpub)
    with pytest.raises(TrustError, match="not signed"):
        verify_index(RAW, None, apub)
    with pytest.raises(TrustError, match="malformed"):
        verify_index(RAW, b"garbage", apub)
    with pytest.raises(TrustError, match="not an ed25519 public key"):
        verify_index(RAW, sig, "c2hvcnQ=")
    # a signature from the right key id but wrong bytes
    doc = json.loads(sig)
    doc["signatures"][0]["sig"] = json.loads(sign_index(b"other", apriv))["signatures"][0]["sig"]
    with pytest.raises(TrustError, match="does not verify"):
        verify_index(RAW, json.dumps(doc).encode(), apub)


def test_rotation_two_signatures(keys):
    (apriv, apub), (bpriv, bpub) = keys
    both = {"signatures": json.loads(sign_index(RAW, apriv))["signatures"] + json.loads(sign_index(RAW, bpriv))["signatures"]}
    raw_sig = json.dumps(both).encode()
    verify_index(RAW, raw_sig, apub)
    verify_index(RAW, raw_sig, bpub)


def test_trust_policy(keys):
    (apriv, apub), _ = keys
    sig = sign_index(RAW, apriv)
    rep = RecordingReporter()
    check_index_trust(_row(apub), _index(), RAW, sig, 2, rep)
    check_index_trust(_row(apub), _index(), RAW, sig, 3, rep)  # same version again: fine
    with pytest.raises(TrustError, match="rollback"):
        check_index_trust(_row(apub), _index(3), RAW, sig, 4, rep)
    with pytest.raises(TrustError, match="no pinned key and was not added with --allow-unsigned") as exc:
        check_index_trust(_row(None), _index(), RAW, None, None, rep)
    assert "--key" in exc.value.hint
    check_index_trust(_row(None, allow_unsigned=True), _index(), RAW, None, None, rep)
    assert not [m for lvl, m in rep.messages if lvl == "warning"]
    past = utc_iso(datetime.now(UTC) - timedelta(days=1))
    check_index_trust(_row(apub), _index(expires=past), RAW, sig, None, rep)
    assert any("expired" in m and "frozen" in m for lvl, m in rep.messages if lvl == "warning")
    assert key_id(b"\0" * 32) != key_id(b"\1" * 32)


def test_key_generate_cli(cli, llmos_home):
    r = cli("key", "generate", "team", "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert data["private_key"] == str(llmos_home / "keys" / "team.key")
    assert (llmos_home / "keys" / "team.pub").read_text().strip() == data["public_key"]
    r = cli("key", "generate", "team")
    assert r.exit_code == 2 and "already exists" in r.stderr
    r = cli("key", "generate", "other", "-s")
    assert r.exit_code == 0 and not (llmos_home / "keys" / "other.key").exists()


@pytest.mark.parametrize("tamper", ["unsigned", "wrong-key", "changed-after-signing"])
def test_a_pinned_source_is_never_read_without_its_signature(keys, tmp_path, cli, llmos_home, tamper):
    """Trust fails closed: every kind of bad signature on a pinned folder source is refused by
    ``llmos update`` through the real code path, and nothing of that index is kept."""
    from llmos_cli.registry.index import write_index

    (apriv, apub), (bpriv, _) = keys
    reg = tmp_path / "reg"
    reg.mkdir()
    write_index(reg, sign_key=bpriv if tamper == "wrong-key" else apriv)
    if tamper == "unsigned":
        (reg / "index.json.sig").unlink()
    elif tamper == "changed-after-signing":
        raw = json.loads((reg / "index.json").read_bytes())
        raw["version"] = raw["version"] + 1
        (reg / "index.json").write_text(json.dumps(raw))
    r = cli("source", "add", "pinned", str(reg), "--key", apub, "--json")
    if r.exit_code == 0:
        r = cli("update", "--json")
    from llmos_cli.errors import ExitCode

    assert r.exit_code == int(ExitCode.TRUST), r
    assert r.json()["ok"] is False
    assert not (llmos_home / "lists" / "pinned.json").exists()
