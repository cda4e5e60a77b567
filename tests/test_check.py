"""llmos check: findings with fields, exit codes, archives, GGUF and adapter/base checks."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from llmos_cli.app.build import build_package
from llmos_cli.app.check import check_path, glob_match

BASE_TENSORS = {"token_embd.weight": (16, 8), "blk.0.attn_q.weight": (8, 8), "blk.0.attn_v.weight": (8, 8)}


def write_gguf(
    path: Path,
    arch: str = "llama",
    *,
    adapter: bool = False,
    general_type: str | None = None,
    adapter_type: str | None = "lora",
    targets=("blk.0.attn_q.weight",),
    drop: str | None = None,
) -> Path:
    """A tiny real GGUF: a base (named tensors) or a LoRA adapter (lora_a/lora_b pairs)."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch)
    if adapter:
        w.add_string("general.type", general_type or "adapter")
        if adapter_type is not None:
            w.add_string("adapter.type", adapter_type)
        w.add_float32("adapter.lora.alpha", 8.0)
        for t in targets:
            for suffix, shape in ((".lora_a", (2, 8)), (".lora_b", (8, 2))):
                if drop != t + suffix:
                    w.add_tensor(t + suffix, np.zeros(shape, dtype=np.float32))
    else:
        w.add_string("general.type", general_type or "model")
        w.add_context_length(256)
        for name, shape in BASE_TENSORS.items():
            w.add_tensor(name, np.zeros(shape, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def base_model(tmp_path: Path, write_source, arch: str = "llama", name: str = "tiny-base") -> Path:
    src = write_source(tmp_path / "bases", name, kind="model", files={})
    write_gguf(src / "model.gguf", arch)
    return src


def adapter_lib(tmp_path: Path, write_source, base: str = "tiny-base>=1.0", **gguf_kw) -> Path:
    src = write_source(
        tmp_path / "libs",
        "med-lib",
        base=base,
        files={"adapter.gguf": b""},
        extra={"adapter": {"file": "adapter.gguf", "scale": 1.0}},
    )
    write_gguf(src / "adapter.gguf", gguf_kw.pop("arch", "llama"), adapter=True, **gguf_kw)
    return src


def codes(report) -> dict[str, str]:
    return {f.code: f.severity for f in report.findings}


# ---------------------------------------------------------------- source folders


def test_clean_source_passes(tmp_path, write_source, cli):
    src = write_source(tmp_path, "demo")
    r = cli("check", src, "--json")
    assert r.exit_code == 0, r
    env = r.json()
    assert env["command"] == "check" and env["ok"] is True
    assert env["data"] == {"path": str(src), "ok": True, "findings": []}
    r = cli("check", src)
    assert r.exit_code == 0 and "ok" in r.stdout


@pytest.mark.parametrize(
    "mutate, code, field",
    [
        (lambda p: p.pop("license"), "missing-field", "package.license"),
        (lambda p: p.update(version="one.two"), "invalid-version", "package.version"),
        (lambda p: p.update(depends=["good>=1", "bad>=>1"]), "invalid-relation", "package.depends[1]"),
        (lambda p: p.update(conflicts=["Not A Name"]), "invalid-relation", "package.conflicts[0]"),
        (lambda p: p.update(kind="plugin"), "invalid-kind", "package.kind"),
        (lambda p: p.update(name="Bad_Name"), "invalid-name", "package.name"),
    ],
)
def test_field_errors_are_named(tmp_path, write_source, cli, mutate, code, field):
    import tomllib

    import tomli_w

    src = write_source(tmp_path, "demo")
    data = tomllib.loads((src / "llmos.toml").read_text())
    mutate(data["package"])
    (src / "llmos.toml").write_text(tomli_w.dumps(data))
    r = cli("check", src, "--json")
    assert r.exit_code == 10, r
    findings = r.json()["data"]["findings"]
    assert r.json()["data"]["ok"] is False
    assert any(f["code"] == code and f["field"] == field and f["severity"] == "error" for f in findings), findings
    for f in findings:
        assert set(f) == {"code", "severity", "message", "field", "path"}
    # human form names the field on stderr
    r = cli("check", src)
    assert r.exit_code == 10 and field in r.stderr


def test_every_problem_reported_at_once(tmp_path, write_source):
    src = write_source(
        tmp_path,
        "demo",
        files={"docs/a.md": "a"},
        extra={
            "knowledge": {"documents": ["docs/*.md", "papers/**/*.pdf"]},
            "glossary": {"file": "missing.toml"},
        },
    )
    rep = check_path(src)
    assert codes(rep) == {"missing-file": "error", "glob-empty": "warning"}
    f = {x.code: x for x in rep.findings}
    assert f["missing-file"].field == "glossary.file"
    assert f["glob-empty"].field == "knowledge.documents[1]"
    assert rep.exit_code == 10


def test_glob_only_warning_exits_zero(tmp_path, write_source, cli):
    src = write_source(tmp_path, "demo", files={"docs/a.md": "a"}, extra={"knowledge": {"documents": ["notes/*.txt"]}})
    r = cli("check", src, "--json")
    assert r.exit_code == 0, r
    assert [f["code"] for f in r.json()["data"]["findings"]] == ["glob-empty"]


@pytest.mark.parametrize("text, code", [("", "manifest-empty"), ("[package\n", "manifest-syntax"), ("\xff", "manifest-syntax")])
def test_malformed_manifest(tmp_path, cli, text, code):
    src = tmp_path / "src"
    src.mkdir()
    (src / "llmos.toml").write_bytes(text.encode("latin-1"))
    r = cli("check", src, "--json")
    assert r.exit_code == 10, r
    assert r.json()["data"]["findings"][0]["code"] == code


def test_missing_manifest_and_missing_path(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    r = cli("check", tmp_path / "empty", "--json")
    assert r.exit_code == 10 and r.json()["data"]["findings"][0]["code"] == "missing-manifest"
    r = cli("check", tmp_path / "nope")
    assert r.exit_code == 3 and "no such file" in r.stderr


def test_unsafe_source_file_is_an_error(tmp_path, write_source):
    src = write_source(tmp_path, "demo")
    (src / "docs/leak.md").symlink_to(tmp_path)
    rep = check_path(src)
    assert "unsafe-file" in codes(rep) and not rep.ok


def test_glob_semantics():
    assert glob_match("docs/*.md", "docs/a.md")
    assert not glob_match("docs/*.md", "docs/sub/a.md")
    assert glob_match("docs/**/*.md", "docs/a.md") and glob_match("docs/**/*.md", "docs/x/y/a.md")
    assert glob_match("**", "any/thing") and glob_match("doc?.txt", "doc1.txt") and glob_match("[ab].md", "b.md")


# ---------------------------------------------------------------- GGUF: models and adapters


def test_model_gguf_must_be_readable(tmp_path, write_source):
    good = base_model(tmp_path, write_source)
    assert check_path(good).ok
    bad = write_source(tmp_path / "b", "bad-model", kind="model", files={"model.gguf": b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40})
    rep = check_path(bad)
    f = [x for x in rep.findings if x.code == "invalid-gguf"]
    assert f and f[0].field == "model.file" and rep.exit_code == 10
    adapter_as_model = write_source(tmp_path / "c", "odd-model", kind="model", files={})
    write_gguf(adapter_as_model / "model.gguf", adapter=True)
    assert "gguf-type" in codes(check_path(adapter_as_model))


def test_adapter_against_base_given_with_base_option(tmp_path, write_source, cli):
    base = base_model(tmp_path, write_source)
    lib = adapter_lib(tmp_path, write_source)
    r = cli("check", lib, "--base", base, "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["findings"] == []
    # base as an archive and as a bare .gguf file
    arch = build_package(base, tmp_path / "pool")
    assert check_path(lib, arch.path).ok
    assert check_path(lib, base / "model.gguf").ok


def test_adapter_architecture_mismatch(tmp_path, write_source, cli):
    base = base_model(tmp_path, write_source, arch="qwen2")
    lib = adapter_lib(tmp_path, write_source)
    r = cli("check", lib, "--base", base, "--json")
    assert r.exit_code == 10, r
    f = [x for x in r.json()["data"]["findings"] if x["code"] == "architecture-mismatch"]
    assert f and f[0]["field"] == "adapter.file" and "'llama'" in f[0]["message"] and "'qwen2'" in f[0]["message"]


@pytest.mark.parametrize(
    "kw, code",
    [
        ({"general_type": "model"}, "gguf-type"),
        ({"adapter_type": "ia3"}, "adapter-type"),
        ({"adapter_type": None}, "adapter-type"),
        ({"drop": "blk.0.attn_q.weight.lora_b"}, "adapter-pair"),
        ({"targets": ("blk.0.ffn_up.weight",)}, "adapter-tensor"),
        ({"targets": ()}, "adapter-empty"),
    ],
)
def test_bad_adapters(tmp_path, write_source, kw, code):
    base = base_model(tmp_path, write_source)
    lib = adapter_lib(tmp_path, write_source, **kw)
    rep = check_path(lib, base)
    assert codes(rep).get(code) == "error", rep.findings
    assert rep.exit_code == 10


def test_unreadable_adapter(tmp_path, write_source):
    lib = adapter_lib(tmp_path, write_source)
    (lib / "adapter.gguf").write_bytes((lib / "adapter.gguf").read_bytes()[:40])  # truncated
    rep = check_path(lib)
    f = [x for x in rep.findings if x.code == "invalid-gguf"]
    assert f and f[0].field == "adapter.file"


def test_base_not_found_is_a_warning(tmp_path, write_source, cli):
    lib = adapter_lib(tmp_path, write_source)
    r = cli("check", lib, "--json")
    assert r.exit_code == 0, r
    f = r.json()["data"]["findings"]
    assert [x["code"] for x in f] == ["base-not-found"] and f[0]["severity"] == "warning"
    assert "not checked" in f[0]["message"]


def test_base_found_in_local_source_lists(tmp_path, write_source, cli):
    base = base_model(tmp_path, write_source, arch="qwen2")
    reg = tmp_path / "reg"
    build_package(base, reg / "pool")
    assert cli("index", reg).exit_code == 0
    assert cli("source", "add", "local", reg, "--allow-unsigned").exit_code == 0
    assert cli("update", "local").exit_code == 0
    lib = adapter_lib(tmp_path, write_source)  # a llama adapter; the listed base is qwen2
    rep = check_path(lib)
    assert codes(rep) == {"architecture-mismatch": "error"}
    assert "source local" in rep.findings[0].message
    qlib = adapter_lib(tmp_path / "q", write_source, arch="qwen2")
    assert check_path(qlib).findings == []
    # the constraint matters: a base outside it is not used
    other = adapter_lib(tmp_path / "o", write_source, base="tiny-base>=2")
    assert codes(check_path(other)) == {"base-not-found": "warning"}


def test_base_option_naming_another_package_warns(tmp_path, write_source):
    base = base_model(tmp_path, write_source, name="other-base")
    lib = adapter_lib(tmp_path, write_source)
    rep = check_path(lib, base)
    assert codes(rep) == {"base-mismatch": "warning"}


def test_bad_base_option(tmp_path, write_source, cli):
    lib = adapter_lib(tmp_path, write_source)
    r = cli("check", lib, "--base", tmp_path / "nope")
    assert r.exit_code == 3, r
    r = cli("check", lib, "--base", lib)  # a library is no base
    assert r.exit_code == 5 and "not a model" in r.stderr


# ---------------------------------------------------------------- archives


def _rewrite(archive: Path, out: Path, change) -> Path:
    """Copy an archive member by member, letting ``change(name, data)`` return new data (None drops it)."""
    buf = io.BytesIO()
    with tarfile.open(archive, "r:gz") as src, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for ti in src.getmembers():
            data = change(ti.name, src.extractfile(ti).read())
            if data is None:
                continue
            ti.size = len(data)
            dst.addfile(ti, io.BytesIO(data))
        extra = change("__extra__", b"")
        if extra:
            ti = tarfile.TarInfo("smuggled.sh")
            ti.size = len(extra)
            dst.addfile(ti, io.BytesIO(extra))
    out.write_bytes(gzip.compress(buf.getvalue()))
    return out


def test_archive_checks(tmp_path, write_source, cli):
    src = write_source(tmp_path, "demo", files={"docs/a.md": "alpha", "docs/b.md": "beta"}, extra={"knowledge": {"documents": ["docs/*.md"]}})
    good = build_package(src, tmp_path / "out").path
    r = cli("check", good, "--json")
    assert r.exit_code == 0 and r.json()["data"]["findings"] == [], r

    tampered = _rewrite(good, tmp_path / "t.llmos", lambda n, d: b"ALPHA" if n == "docs/a.md" else (None if n == "__extra__" else d))
    r = cli("check", tampered, "--json")
    assert r.exit_code == 10, r
    (f,) = r.json()["data"]["findings"]
    assert f["code"] == "hash-mismatch" and f["field"] == "files.docs/a.md" and f["path"] == "docs/a.md"

    grown = _rewrite(good, tmp_path / "g.llmos", lambda n, d: d + b"!" if n == "docs/b.md" else (None if n == "__extra__" else d))
    assert codes(check_path(grown)) == {"size-mismatch": "error"}

    extra = _rewrite(good, tmp_path / "e.llmos", lambda n, d: b"#!/bin/sh\nrm -rf ~\n" if n == "__extra__" else d)
    rep = check_path(extra)
    assert codes(rep) == {"extra-file": "error"} and rep.findings[0].path == "smuggled.sh"

    missing = _rewrite(good, tmp_path / "m.llmos", lambda n, d: None if n in ("docs/b.md", "__extra__") else d)
    assert codes(check_path(missing)) == {"missing-file": "error"}


def test_archive_structural_problems(tmp_path, write_source, cli):
    good = build_package(write_source(tmp_path, "demo"), tmp_path / "out").path
    trav = _rewrite(good, tmp_path / "x.llmos", lambda n, d: None if n == "__extra__" else d)
    buf = io.BytesIO()
    with tarfile.open(trav, "r:gz") as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for ti in src.getmembers():
            dst.addfile(ti, src.extractfile(ti))
        ti = tarfile.TarInfo("../../escape.txt")
        ti.size = 1
        dst.addfile(ti, io.BytesIO(b"x"))
    trav.write_bytes(gzip.compress(buf.getvalue()))
    r = cli("check", trav, "--json")
    assert r.exit_code == 10, r
    (f,) = r.json()["data"]["findings"]
    assert f["code"] == "invalid-archive" and "unsafe member path" in f["message"]

    trunc = tmp_path / "trunc.llmos"
    trunc.write_bytes(good.read_bytes()[:200])
    assert codes(check_path(trunc)) == {"invalid-archive": "error"}
    empty = tmp_path / "empty.llmos"
    empty.write_bytes(b"")
    assert codes(check_path(empty)) == {"invalid-archive": "error"}


def test_archive_adapter_checked_against_base(tmp_path, write_source):
    base = base_model(tmp_path, write_source, arch="qwen2")
    lib = adapter_lib(tmp_path, write_source)
    lib_arch = build_package(lib, tmp_path / "pool").path  # build cannot know the base: it builds
    base_arch = build_package(base, tmp_path / "pool").path
    rep = check_path(lib_arch, base_arch)
    assert codes(rep) == {"architecture-mismatch": "error"}


def test_train_table_problems_are_warnings(tmp_path, write_source):
    """[train] only matters to whoever retrains: unknown keys and values llmos train would refuse are
    reported as warnings (the package still passes); a good table reports nothing."""
    src = write_source(
        tmp_path, "good", extra={"train": {"rank": 8, "steps": 10, "companions": [{"file": "../x", "prob": 0.5}], "companion_sampling": "subsets"}}
    )
    assert check_path(src).findings == []
    src = write_source(tmp_path, "bad", extra={"train": {"rank": 8, "stpes": 10, "target_modules": ["lm_head"]}})
    rep = check_path(src)
    assert codes(rep) == {"train-unknown-key": "warning", "train-options": "warning"}
    f = {x.code: x for x in rep.findings}
    assert f["train-unknown-key"].field == "train.stpes"
    assert "lm_head" in f["train-options"].message
    assert rep.exit_code == 0
