"""``llmos export --format peft``: GGUF adapters (and cat-merged stacks) as PEFT folders.

No GPU and no vLLM here: the PEFT folder is checked the way vLLM would use it,
by loading it with transformers + peft on the Hugging Face base it names
(``adapter_config.json``'s ``base_model_name_or_path``: the folder llmos
converts from the GGUF) and comparing the logits with llama.cpp running the
GGUF adapters on the GGUF base.  Tiny real models, seconds each.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.trainkit import llama_logits, make_base, random_adapter, rel_err, require_train_extra, write_library

require_train_extra()

TOKENS = [5, 17, 33, 100, 200, 7, 9, 250, 40, 3]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A tiny base, two libraries with adapters (lib-b's adapts q/k: the permuted rows), one without, built."""
    from llmos_cli.app.build import build_package

    root = tmp_path_factory.mktemp("peft")
    base = make_base(root / "base")
    a = write_library(root, "lib-a")
    b = write_library(root, "lib-b", facts=[("Trevasol", "Ost rash")])
    docs = write_library(root, "docs-lib", adapter=False)
    random_adapter(base, a / "adapter.gguf", rank=4, targets=["q_proj", "v_proj", "down_proj"], seed=1)
    random_adapter(base, b / "adapter.gguf", rank=2, targets=["q_proj", "k_proj", "o_proj", "up_proj"], seed=2, alpha=5)
    dist = root / "dist"
    archives = {d.name: build_package(d, dist).path for d in (a, b, docs)}
    return base, a, b, archives, root


@pytest.fixture
def home(kit, cli):
    base, _a, _b, archives, _root = kit
    r = cli("import-model", str(base.gguf), "--name", "tiny", "--version", "1.0", "-y")
    assert r.exit_code == 0, r
    r = cli("install", "-y", *(str(p) for p in archives.values()))
    assert r.exit_code == 0, r


def _peft_logits(folder):
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = json.loads((folder / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"], dtype=torch.float32)
    pm = PeftModel.from_pretrained(base, str(folder))
    with torch.no_grad():
        return np.asarray(pm(torch.tensor([TOKENS])).logits[0].double().numpy())


def _export(cli, *args):
    r = cli("export", *args, "--json")
    assert r.exit_code == 0, r
    return json.loads(r.stdout)["data"]


def test_library_round_trip_matches_llama_cpp(kit, home, cli, tmp_path, llmos_home):
    base, a, b, _, _ = kit
    for lib, src in (("lib-a", a), ("lib-b", b)):
        data = _export(cli, lib, "--format", "peft", "-o", str(tmp_path / lib))
        out = tmp_path / lib
        cfg = json.loads((out / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["r"] == cfg["lora_alpha"] == data["rank"]
        assert cfg["base_model_name_or_path"] == str(llmos_home / "exports" / "tiny" / "hf") == data["base_model"]
        assert data["base_source"] == "converted" and data["stack"] == f"tiny+{lib}"
        want = llama_logits(base.gguf, TOKENS, [(src / "adapter.gguf", 1.0)])
        assert rel_err(want, llama_logits(base.gguf, TOKENS)) > 0.05  # the adapter really changes the output
        assert rel_err(_peft_logits(out), want) < 1e-3
    assert json.loads((tmp_path / "lib-b" / "adapter_config.json").read_text())["target_modules"] == ["q_proj", "k_proj", "o_proj", "up_proj"]


def test_stack_is_one_cat_merged_adapter(kit, home, cli, llmos_home):
    base, a, b, _, _ = kit
    data = _export(cli, "lib-a:0.5+lib-b", "--format", "peft")
    out = llmos_home / "exports" / "tiny" / "tiny+lib-a:0.5+lib-b"
    assert data["out"] == str(out) and data["rank"] == 6  # 4 + 2
    assert [(x["name"], x["scale"]) for x in data["libraries"]] == [("lib-a", 0.5), ("lib-b", 1.0)]
    stacked = llama_logits(base.gguf, TOKENS, [(a / "adapter.gguf", 0.5), (b / "adapter.gguf", 1.0)])
    assert rel_err(stacked, llama_logits(base.gguf, TOKENS, [(a / "adapter.gguf", 1.0), (b / "adapter.gguf", 1.0)])) > 1e-3  # the scale matters
    assert rel_err(_peft_logits(out), stacked) < 1e-3
    again = _export(cli, "lib-a:0.5+lib-b")
    assert again["reused"] is True and again["out"] == str(out)


def test_source_folder_and_named_base(kit, home, cli, tmp_path, llmos_home):
    _, a, _, archives, _ = kit
    data = _export(cli, str(archives["lib-b"]) + "+" + str(a), "-o", str(tmp_path / "x"), "--base-model", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert [x["origin"] for x in data["libraries"]] == ["archive", "folder"]
    assert data["base_source"] == "option"
    assert json.loads((tmp_path / "x" / "adapter_config.json").read_text())["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert not (llmos_home / "exports" / "tiny" / "hf").exists()  # nothing converted when the base is named


def test_bad_input_is_one_line_with_named_exit_codes(kit, home, cli, tmp_path, llmos_home):
    _, a, _, _, root = kit
    other = write_library(tmp_path, "other-lib")
    (other / "adapter.gguf").write_bytes((a / "adapter.gguf").read_bytes())
    toml = other / "llmos.toml"
    toml.write_text(toml.read_text().replace('base = "tiny>=1.0"', 'base = "bigger>=1.0"'))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    cases = [
        (["no-such-lib"], 3, "not installed"),
        (["lib-a+lib-x"], 3, "not installed"),
        (["docs-lib"], 3, "has no adapter"),
        (["lib-a+" + str(other)], 11, "different base models"),
        (["lib-a", "--format", "gguf"], 2, "unknown export format"),
        (["lib-a+", "--format", "peft"], 2, "empty library name"),
        (["lib-a+lib-a"], 2, "named twice"),
        (["lib-a:x"], 2, "not a number"),
        (["lib-a", "-o", str(tmp_path / "taken")], 2, "not an llmos export"),
    ]
    for args, code, words in cases:
        r = cli("export", *args)
        assert r.exit_code == code, (args, r)
        assert words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stdout == ""
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    assert not (llmos_home / "exports").exists()  # nothing written by any of them
