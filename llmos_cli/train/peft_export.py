"""GGUF LoRA adapters -> PEFT adapter folders (what vLLM and transformers+peft read).

A PEFT LoRA folder is ``adapter_config.json`` + ``adapter_model.safetensors``
with tensors named ``base_model.model.<module>.lora_A.weight`` (``[r, in]``)
and ``...lora_B.weight`` (``[out, r]``), in Hugging Face row order.

* ``read_lora_gguf`` (``export.py``) already undoes llama.cpp's q/k row
  permutation of ``lora_B`` and gives each module's scaling (``alpha / r``).
* A **stack** (several adapters at scales) becomes one adapter by a ``cat``
  merge: per module ``A = [A_1; A_2; ...]`` and ``B = [s_1 B_1, s_2 B_2, ...]``
  with each adapter's scale and scaling folded into its B columns, so
  ``B A = sum_i s_i B_i A_i`` exactly; rank = sum of the ranks.  vLLM applies
  one LoRA per request, so this is how a stack is served there.
* Every module gets the **same rank** (zero-padded) and ``lora_alpha = r``
  (scaling 1): vLLM reads one global ``r``/``lora_alpha`` and ignores PEFT's
  ``rank_pattern``/``alpha_pattern``, so a uniform folder is read the same way
  by both.  Modules a stack does not adapt in some layer get zero factors, so
  peft finds every key it expects.

``write_hf_base`` writes a Hugging Face checkpoint folder from a Llama GGUF
base (``config.json``, ``model.safetensors``, the tokenizer when transformers
can read it from the GGUF) for bases whose HF id is not known.

Needs numpy, gguf and safetensors (the ``train`` extra; torch is not used).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError
from llmos_cli.fileio import atomic_dir
from llmos_cli.train._deps import require_train_extra
from llmos_cli.train.convert import LlamaHParams, gguf_state_dict, hf_tensor_names, hparams_from_gguf
from llmos_cli.train.export import LoraPair, read_lora_gguf

#: ``--max-lora-rank`` values vLLM accepts
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: linear projections of a Llama layer that a LoRA may target, in HF order
_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: what ``export`` writes beside the PEFT files: where the adapter came from
PROVENANCE = "llmos-export.json"


def vllm_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds ``rank``."""
    for r in VLLM_RANKS:
        if r >= rank:
            return r
    raise InvalidPackageError(f"a LoRA of rank {rank} is above vLLM's largest --max-lora-rank ({VLLM_RANKS[-1]})", "export fewer libraries in one stack")


def hparams_of(base_gguf: str | Path) -> LlamaHParams:
    """Shapes of a Llama GGUF base (head counts for the q/k permutation, layer count for names)."""
    from gguf import GGUFReader

    return hparams_from_gguf(GGUFReader(str(base_gguf), "r"))


def cat_stack(adapters: list[tuple[dict[str, LoraPair], float]]) -> dict[str, LoraPair]:
    """One adapter equal to ``adapters`` applied together at their scales (scaling 1)."""
    import numpy as np

    out: dict[str, LoraPair] = {}
    for name in sorted({k for pairs, _ in adapters for k in pairs}):
        parts = [(pairs[name], scale) for pairs, scale in adapters if name in pairs and scale != 0.0]
        if not parts:
            continue
        a = np.concatenate([p.a for p, _ in parts], axis=0).astype(np.float32)
        b = np.concatenate([p.b * np.float32(p.scaling * s) for p, s in parts], axis=1).astype(np.float32)
        out[name] = LoraPair(a, b, 1.0)
    return out


def read_stack(adapters: list[tuple[Path, float]], hp: LlamaHParams) -> dict[str, LoraPair]:
    """The ``cat`` merge of GGUF adapters at their scales."""
    return cat_stack([(read_lora_gguf(path, hp)[0], scale) for path, scale in adapters])


@dataclass
class PeftFolder:
    path: Path
    rank: int
    target_modules: list[str]
    tensors: int
    base_model: str

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "rank": self.rank, "target_modules": self.target_modules, "tensors": self.tensors, "base_model": self.base_model}


def write_peft_dir(
    pairs: dict[str, LoraPair],
    hp: LlamaHParams,
    out_dir: str | Path,
    *,
    base_model: str,
    provenance: dict[str, Any] | None = None,
) -> PeftFolder:
    """Write ``pairs`` (HF weight name -> pair, B in HF row order) as a PEFT folder, atomically."""
    require_train_extra("writing a PEFT adapter", ("safetensors",))
    import numpy as np
    from safetensors.numpy import save_file

    if not pairs:
        raise InvalidPackageError("the adapter has no LoRA weights to export")
    known = set(hf_tensor_names(hp.n_layer))
    short: set[str] = set()
    for k in pairs:
        if k not in known or k.split(".")[-2] not in _LINEAR:
            raise InvalidPackageError(f"cannot export a LoRA on {k!r}", "LoRA targets must be Llama linear projections (q/k/v/o/gate/up/down)")
        short.add(k.split(".")[-2])
    rank = max(p.rank for p in pairs.values())
    targets = [m for m in _LINEAR if m in short]
    tensors: dict[str, Any] = {}
    for name in hf_tensor_names(hp.n_layer):
        mod = name.split(".")[-2]
        if mod not in short:
            continue
        p = pairs.get(name)
        if p is None:  # a target module this layer does not adapt: zero factors of the right shape
            shape = _linear_shape(hp, mod)
            a = np.zeros((rank, shape[1]), np.float32)
            b = np.zeros((shape[0], rank), np.float32)
        else:
            a = np.zeros((rank, p.a.shape[1]), np.float32)
            b = np.zeros((p.b.shape[0], rank), np.float32)
            a[: p.rank] = p.a
            b[:, : p.rank] = p.b * np.float32(p.scaling)
        key = "base_model.model." + name[: -len(".weight")]
        tensors[key + ".lora_A.weight"] = np.ascontiguousarray(a)
        tensors[key + ".lora_B.weight"] = np.ascontiguousarray(b)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": rank,
        "target_modules": targets,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "rank_pattern": {},
        "alpha_pattern": {},
        "modules_to_save": None,
        "layers_to_transform": None,
        "revision": None,
    }
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if provenance is not None:
            (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return PeftFolder(out, rank, targets, len(tensors), base_model)


def _linear_shape(hp: LlamaHParams, mod: str) -> tuple[int, int]:
    """``[out, in]`` of a Llama projection."""
    q = hp.n_head * hp.head_dim
    kv = hp.n_head_kv * hp.head_dim
    return {
        "q_proj": (q, hp.hidden_size),
        "k_proj": (kv, hp.hidden_size),
        "v_proj": (kv, hp.hidden_size),
        "o_proj": (hp.hidden_size, q),
        "gate_proj": (hp.intermediate_size, hp.hidden_size),
        "up_proj": (hp.intermediate_size, hp.hidden_size),
        "down_proj": (hp.hidden_size, hp.intermediate_size),
    }[mod]


# ---------------------------------------------------------------- the base model


def hf_repo_of(base_gguf: str | Path) -> str | None:
    """The Hugging Face id a GGUF records for itself (``general.source.url`` & co), if any."""
    from gguf import GGUFReader

    reader = GGUFReader(str(base_gguf), "r")
    for key in ("general.source.huggingface.repository", "general.source.url", "general.source.repo_url", "general.repo_url"):
        f = reader.fields.get(key)
        if f is None:
            continue
        try:
            v = str(f.contents()).strip()
        except (ValueError, TypeError, UnicodeDecodeError):
            continue
        for prefix in ("https://huggingface.co/", "http://huggingface.co/", "hf://"):
            if v.startswith(prefix):
                v = v[len(prefix) :]
                break
        else:
            if "://" in v:
                continue
        parts = [p for p in v.split("/") if p]
        if len(parts) >= 2 and all(c.isalnum() or c in "-_." for c in "".join(parts[:2])):
            return f"{parts[0]}/{parts[1]}"
    return None


@dataclass
class HfBase:
    path: Path
    tokenizer: bool
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "tokenizer": self.tokenizer, "warnings": self.warnings}


def write_hf_base(base_gguf: str | Path, out_dir: str | Path) -> HfBase:
    """A Hugging Face Llama checkpoint folder from a GGUF base (q/k rows un-permuted).

    Weights stay float32 when the GGUF's are float32 and are written float16
    otherwise (dequantised).  The tokenizer is written by transformers' own GGUF
    reader; without transformers, or where it cannot read this vocabulary, the
    folder has no tokenizer and a warning says so (give vLLM ``--tokenizer``).
    """
    require_train_extra("converting a GGUF base to a Hugging Face folder", ("safetensors",))
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader
    from safetensors.numpy import save_file

    reader = GGUFReader(str(base_gguf), "r")
    f32 = all(t.tensor_type == GGMLQuantizationType.F32 for t in reader.tensors)
    dtype = np.float32 if f32 else np.float16
    hp, sd = gguf_state_dict(base_gguf)
    warnings: list[str] = []
    out = Path(out_dir)
    tokenizer = False
    with atomic_dir(out) as tmp:
        save_file({k: np.ascontiguousarray(v.astype(dtype)) for k, v in sd.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg = hp.to_hf()
        cfg["torch_dtype"] = "float32" if f32 else "float16"
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        try:
            from transformers import AutoTokenizer

            src = Path(base_gguf)
            tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
            tok.save_pretrained(str(tmp))
            tokenizer = True
        except Exception as exc:  # transformers missing, or a vocabulary it cannot read
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.append(f"no tokenizer written to {out} ({first[:200]}); give vLLM --tokenizer HF_ID")
    return HfBase(out, tokenizer, warnings)
