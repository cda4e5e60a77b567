"""The integrator: ``llmos merge`` (peft add_weighted_adapter) and its package union."""

from __future__ import annotations

import tomllib

import pytest

from tests.helpers.trainkit import llama_logits, make_base, random_adapter, rel_err, require_train_extra, write_library

require_train_extra()

TOKENS = [5, 17, 33, 100, 200, 7, 9, 250]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    base = make_base(root / "base")
    a = write_library(root, "lib-a", facts=[("Zorblax", "Kelvane fever"), ("Mirodine", "Plath cough")], provides=["virt-a"], depends=["other>=2"])
    b = write_library(root, "lib-b", facts=[("Trevasol", "Ost rash")], depends=["lib-a>=1.0"])
    (b / "tools").mkdir()
    (b / "tools" / "echo.py").write_text("import json,sys; json.dump(json.load(sys.stdin), sys.stdout)\n")
    with open(b / "llmos.toml", "a") as fh:
        fh.write('\n[[tools]]\nname = "echo"\ndescription = "Echo the arguments."\ncommand = ["python3", "tools/echo.py"]\n')
    random_adapter(base, a / "adapter.gguf", rank=4, targets=["q_proj", "v_proj", "down_proj"], seed=1)
    random_adapter(base, b / "adapter.gguf", rank=2, targets=["q_proj", "k_proj", "o_proj", "up_proj"], seed=2, alpha=5)
    return base, a, b, root


def test_cat_merge_equals_stacking(setup, tmp_path):
    from llmos_cli.gguf_info import read_header
    from llmos_cli.runtime.abi import check_adapter
    from llmos_cli.train.merge import merge_libraries

    base, a, b, _ = setup
    res = merge_libraries([str(a), str(b)], tmp_path / "ab", method="cat", base=str(base.gguf))
    assert res.rank == 6  # 4 + 2: nothing truncated
    merged = tmp_path / "ab" / "adapter.gguf"
    assert check_adapter(read_header(merged), read_header(base.gguf)) == []
    stacked = llama_logits(base.gguf, TOKENS, [(a / "adapter.gguf", 1.0), (b / "adapter.gguf", 1.0)])
    bare = llama_logits(base.gguf, TOKENS)
    one = llama_logits(base.gguf, TOKENS, [(merged, 1.0)])
    assert rel_err(stacked, bare) > 0.05
    assert rel_err(one, stacked) < 1e-4


def test_weights_scale_the_sources(setup, tmp_path):
    from llmos_cli.train.merge import merge_libraries

    base, a, b, _ = setup
    merge_libraries([str(a), str(b)], tmp_path / "w", method="cat", base=str(base.gguf), weights=[0.5, 2.0])
    want = llama_logits(base.gguf, TOKENS, [(a / "adapter.gguf", 0.5), (b / "adapter.gguf", 2.0)])
    assert rel_err(llama_logits(base.gguf, TOKENS, [(tmp_path / "w" / "adapter.gguf", 1.0)]), want) < 1e-4


def test_merged_manifest_unites_the_libraries(setup, tmp_path):
    from llmos_cli.pkg.manifest import load_manifest
    from llmos_cli.train.merge import merge_libraries

    base, a, b, _ = setup
    merge_libraries([str(a), str(b)], tmp_path / "ab", method="cat", base=str(base.gguf), name="ab-lib", version="2.0.0")
    m = load_manifest(tmp_path / "ab")
    raw = tomllib.loads((tmp_path / "ab" / "llmos.toml").read_text())
    assert (m.name, m.version, str(m.meta.base)) == ("ab-lib", "2.0.0", "tiny>=1.0")
    assert {p for p in m.meta.provides} >= {"lib-a", "lib-b", "virt-a"}
    deps = [str(d) for d in m.meta.depends]
    assert deps == ["other>=2"]  # lib-b's need of lib-a is met inside the merge
    assert raw["merged_from"]["method"] == "cat"
    assert [s["name"] for s in raw["merged_from"]["sources"]] == ["lib-a", "lib-b"]
    assert all(len(s["adapter_sha256"]) == 64 for s in raw["merged_from"]["sources"])
    docs = sorted(p.relative_to(tmp_path / "ab").as_posix() for p in (tmp_path / "ab" / "knowledge").rglob("*.md"))
    assert docs == ["knowledge/lib-a/docs/drugs.md", "knowledge/lib-b/docs/drugs.md"]
    gloss = tomllib.loads((tmp_path / "ab" / "glossary.toml").read_text())["terms"]
    assert set(gloss) == {"Zorblax", "Mirodine", "Trevasol"}
    assert [t["name"] for t in raw["tools"]] == ["echo"]
    assert (tmp_path / "ab" / "tools" / "echo.py").is_file()  # tools keep their paths
    assert len(raw["train"]["eval"]) == 2


@pytest.mark.parametrize("method", ["linear", "ties", "dare_ties"])
def test_other_methods_write_valid_adapters(setup, tmp_path, method):
    from llmos_cli.gguf_info import read_header
    from llmos_cli.runtime.abi import check_adapter
    from llmos_cli.train.merge import merge_libraries

    base, a, b, _ = setup
    res = merge_libraries([str(a), str(b)], tmp_path / "m", method=method, base=str(base.gguf), density=0.7)
    out = tmp_path / "m" / "adapter.gguf"
    assert check_adapter(read_header(out), read_header(base.gguf)) == []
    got = llama_logits(base.gguf, TOKENS, [(out, 1.0)])
    assert rel_err(got, llama_logits(base.gguf, TOKENS)) > 1e-3  # it does something
    assert res.method == method


def test_merge_cli_json_and_bad_input(setup, tmp_path, cli):
    base, a, b, root = setup
    r = cli("merge", str(a), str(b), "-o", str(tmp_path / "ab"), "--base", str(base.gguf), "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert data["method"] == "cat" and data["rank"] == 6 and data["name"] == "ab"
    # the output folder is not silently overwritten
    r = cli("merge", str(a), str(b), "-o", str(tmp_path / "ab"), "--base", str(base.gguf))
    assert r.exit_code == 2 and "not empty" in r.stderr
    r = cli("merge", str(a), "-o", str(tmp_path / "one"))
    assert r.exit_code == 2 and "at least two" in r.stderr
    r = cli("merge", str(a), str(b), "-o", str(tmp_path / "x"), "--method", "average")
    assert r.exit_code == 2 and "cat, linear, ties, dare_ties" in r.stderr
    r = cli("merge", str(a), str(root / "nope"), "-o", str(tmp_path / "y"))
    assert r.exit_code == 3
    r = cli("merge", str(a), str(b), "-o", str(tmp_path / "sim"), "-s")
    assert r.exit_code == 0 and not (tmp_path / "sim").exists()
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_libraries_on_different_bases_are_refused(setup, tmp_path):
    from llmos_cli.errors import InvalidPackageError
    from llmos_cli.train.merge import merge_libraries

    base, a, _, root = setup
    c = write_library(root / "other", "lib-c")
    text = (c / "llmos.toml").read_text().replace('base = "tiny>=1.0"', 'base = "other-model>=1"')
    (c / "llmos.toml").write_text(text)
    with pytest.raises(InvalidPackageError, match="different base models"):
        merge_libraries([str(a), str(c)], tmp_path / "ac", base=str(base.gguf))
