"""Round trip: transformers+peft logits == llama.cpp (base GGUF + adapter GGUF) logits.

The base is converted by ``convert_hf_to_gguf`` and the LoRA written by
``write_lora_gguf``; both must apply llama.cpp's q/k row permutation, and the
adapter's scale must be PEFT's ``alpha/r``.  Tiny models, seconds.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.trainkit import llama_logits, make_base, rel_err, require_train_extra

require_train_extra()

TOKENS = [5, 17, 33, 100, 200, 7, 9, 250, 40, 3]
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("tiny"))


def _peft(base, rank, targets, seed=3, **kw):
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(copy.deepcopy(base.model), LoraConfig(r=rank, target_modules=targets, init_lora_weights=False, **kw))


def _hf_logits(model, tokens):
    import numpy as np
    import torch

    with torch.no_grad():
        return np.asarray(model(torch.tensor([tokens])).logits[0].double().numpy())


def test_base_conversion_matches_transformers(base):
    from llmos_cli.gguf_info import read_header

    head = read_header(base.gguf)
    assert head.architecture == "llama" and head.chat_template and "<tool_call>" in head.chat_template
    assert rel_err(llama_logits(base.gguf, TOKENS), _hf_logits(base.model, TOKENS)) < 1e-3


@pytest.mark.parametrize(
    "rank,targets,kw",
    [
        (4, ALL, {"lora_alpha": 8}),
        (3, ["q_proj", "k_proj"], {"lora_alpha": 5}),  # only the permuted projections
        (8, ["v_proj", "down_proj", "k_proj"], {"lora_alpha": 8, "use_rslora": True}),  # scale alpha/sqrt(r)
    ],
)
def test_adapter_round_trip_matches_peft(base, tmp_path, rank, targets, kw):
    from llmos_cli.gguf_info import read_header
    from llmos_cli.runtime.abi import check_adapter
    from llmos_cli.train.convert import LlamaHParams
    from llmos_cli.train.export import peft_model_pairs, write_lora_gguf

    pm = _peft(base, rank, targets, **kw)
    hp = LlamaHParams.from_hf(base.config.to_dict())
    out = write_lora_gguf(peft_model_pairs(pm), hp, tmp_path / "a.gguf").path
    head = read_header(out)
    assert head.general_type == "adapter" and head.adapter_type == "lora" and head.architecture == "llama"
    assert check_adapter(head, read_header(base.gguf)) == []
    want = _hf_logits(pm, TOKENS)
    with pm.disable_adapter():
        bare = _hf_logits(pm, TOKENS)
    assert rel_err(want, bare) > 0.05  # the adapter really changes the output
    got = llama_logits(base.gguf, TOKENS, [(out, 1.0)])
    assert rel_err(got, want) < 1e-3


def test_without_qk_permutation_the_logits_disagree(base, tmp_path):
    """The permutation is what makes q/k adapters right (guards the test above)."""
    from llmos_cli.train import export
    from llmos_cli.train.convert import LlamaHParams

    pm = _peft(base, 4, ["q_proj", "k_proj"], lora_alpha=8)
    hp = LlamaHParams.from_hf(base.config.to_dict())
    pairs = export.peft_model_pairs(pm)
    original = export.permute_qk
    try:
        export.permute_qk = lambda w, n_head, n_head_kv=None: w  # what a naive writer does
        out = export.write_lora_gguf(pairs, hp, tmp_path / "naive.gguf").path
    finally:
        export.permute_qk = original
    assert rel_err(llama_logits(base.gguf, TOKENS, [(out, 1.0)]), _hf_logits(pm, TOKENS)) > 1e-2


def test_adapter_read_back_and_saved_peft_folder(base, tmp_path):
    import numpy as np

    from llmos_cli.train.convert import LlamaHParams
    from llmos_cli.train.export import peft_dir_pairs, peft_model_pairs, read_lora_gguf, write_lora_gguf

    pm = _peft(base, 4, ["q_proj", "k_proj", "up_proj"], lora_alpha=12)
    pm.save_pretrained(str(tmp_path / "peft"))
    from_dir = peft_dir_pairs(tmp_path / "peft")
    in_mem = peft_model_pairs(pm)
    assert sorted(from_dir) == sorted(in_mem)
    hp = LlamaHParams.from_hf(base.config.to_dict())
    out = write_lora_gguf(from_dir, hp, tmp_path / "a.gguf").path
    back, meta = read_lora_gguf(out, hp)
    assert meta["alpha"] == pytest.approx(12.0)
    for k, p in in_mem.items():
        np.testing.assert_allclose(back[k].b @ back[k].a * back[k].scaling, p.b @ p.a * p.scaling, rtol=1e-5, atol=1e-6)


def test_gguf_to_transformers_round_trip(base):
    from llmos_cli.train.convert import load_llama_from_gguf

    again = load_llama_from_gguf(base.gguf)
    assert rel_err(_hf_logits(again, TOKENS), _hf_logits(base.model, TOKENS)) < 1e-5


def test_convert_refuses_bad_checkpoints(tmp_path, base):
    from llmos_cli.errors import InvalidPackageError, NotFoundError
    from llmos_cli.train.convert import convert_hf_to_gguf

    with pytest.raises(NotFoundError, match="config.json"):
        convert_hf_to_gguf(tmp_path, tmp_path / "x.gguf")
    bad = tmp_path / "gpt"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(InvalidPackageError, match="not supported"):
        convert_hf_to_gguf(bad, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    notok = tmp_path / "notok"
    notok.mkdir()
    (notok / "config.json").write_text((base.hf_dir / "config.json").read_text())
    with pytest.raises(InvalidPackageError, match="tokenizer.model"):
        convert_hf_to_gguf(notok, tmp_path / "y.gguf")
    assert not list(tmp_path.glob("*.incomplete"))


def test_import_model_from_hf(base, cli):
    r = cli("import-model", str(base.hf_dir), "--from-hf", "--name", "tiny-hf", "-y", "--json")
    assert r.exit_code == 0, r
    r = cli("list", "--json")
    assert "tiny-hf" in {p["name"] for p in r.json()["data"]["packages"]}
    r = cli("run", "What does Zorblax treat?", "--model", "tiny-hf", "--no-libs", "-n", "3", "--json")
    assert r.exit_code == 0, r  # llama.cpp runs the converted model with its own chat template
    r = cli("import-model", str(base.hf_dir.parent), "--from-hf", "--name", "nope", "-y")
    assert r.exit_code == 3 and "config.json" in r.stderr
