"""LoRA adapters <-> GGUF adapter files (the format llama.cpp's ``convert_lora_to_gguf.py`` writes).

A GGUF LoRA carries ``general.architecture`` (the base's), ``general.type =
adapter``, ``adapter.type = lora`` and ``adapter.lora.alpha``; each adapted base
tensor ``T`` gets ``T.lora_a`` (PEFT ``lora_A``, numpy ``[r, in]``) and
``T.lora_b`` (PEFT ``lora_B``, ``[out, r]``).  llama.cpp computes
``W x + s * (alpha / r) * B (A x)`` with ``r`` read from B's shape.

Two details make the file agree with transformers+peft:

* ``lora_B`` of q/k projections gets the same row permutation as the base's
  q/k weights (``convert.permute_qk``), since ``(P B) A = P (B A)``;
* PEFT's per-module scaling (``alpha/r``, rsLoRA's ``alpha/sqrt(r)``, rank and
  alpha patterns, the ``alpha = r`` of a ``cat`` merge) is reproduced by one
  global alpha plus, where a module's scaling differs, a factor folded into B.

``LoraPair`` is the neutral form used by training, merging and tests:
HF module weight name -> (A, B, scaling), with B in HF row order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError
from llmos_cli.fileio import atomic_path
from llmos_cli.gguf_info import read_header
from llmos_cli.train.convert import (
    LlamaHParams,
    gguf_name,
    hf_tensor_names,
    permute_qk,
    unpermute_qk,
)


@dataclass
class LoraPair:
    a: Any  # numpy float32 [r, in]
    b: Any  # numpy float32 [out, r], HF row order
    scaling: float

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


@dataclass
class ExportResult:
    path: Path
    tensors: int
    ranks: list[int]
    alpha: float
    modules: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"path": str(self.path), "tensors": self.tensors, "ranks": self.ranks, "alpha": self.alpha, "modules": self.modules}


def _qk_kind(hf_name: str) -> str | None:
    if hf_name.endswith("self_attn.q_proj.weight"):
        return "q"
    if hf_name.endswith("self_attn.k_proj.weight"):
        return "k"
    return None


def write_lora_gguf(
    pairs: dict[str, LoraPair],
    hp: LlamaHParams,
    out_path: str | Path,
    *,
    name: str | None = None,
    dtype: str = "f32",
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Write ``pairs`` (HF weight name -> LoraPair) as a llama.cpp LoRA GGUF."""
    import gguf
    import numpy as np

    if not pairs:
        raise InvalidPackageError("the adapter has no LoRA weights to export")
    known = set(hf_tensor_names(hp.n_layer))
    for k in pairs:
        if k not in known or k.endswith("layernorm.weight") or k in ("model.norm.weight",):
            raise InvalidPackageError(f"cannot export a LoRA on {k!r}", "LoRA targets must be Llama linear projections (q/k/v/o/gate/up/down)")
    # one global alpha; modules whose scaling differs get the factor folded into B
    first = next(iter(pairs.values()))
    alpha = float(first.scaling * first.rank)
    out_path = Path(out_path)
    ranks: set[int] = set()
    with atomic_path(out_path) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name(name or out_path.stem)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for k, v in (metadata or {}).items():
            w.add_string(k, v)
        for hf_name in sorted(pairs, key=lambda n: hf_tensor_names(hp.n_layer).index(n)):
            p = pairs[hf_name]
            a = np.asarray(p.a, dtype=np.float32)
            b = np.asarray(p.b, dtype=np.float32)
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
                raise InvalidPackageError(f"{hf_name}: LoRA shapes {a.shape} / {b.shape} do not pair up")
            factor = p.scaling * p.rank / alpha if alpha else p.scaling
            if abs(factor - 1.0) > 1e-12:
                b = b * np.float32(factor)
            kind = _qk_kind(hf_name)
            if kind == "q":
                b = permute_qk(b, hp.n_head, hp.n_head)
            elif kind == "k":
                b = permute_qk(b, hp.n_head, hp.n_head_kv)
            t = np.float16 if dtype == "f16" else np.float32
            base = gguf_name(hf_name, hp.n_layer)
            w.add_tensor(f"{base}.lora_a", np.ascontiguousarray(a.astype(t)))
            w.add_tensor(f"{base}.lora_b", np.ascontiguousarray(b.astype(t)))
            ranks.add(p.rank)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return ExportResult(out_path, 2 * len(pairs), sorted(ranks), alpha, sorted({k.split(".")[-2] for k in pairs}))


def read_lora_gguf(path: str | Path, hp: LlamaHParams) -> tuple[dict[str, LoraPair], dict[str, Any]]:
    """Read a LoRA GGUF back into HF-named pairs (B un-permuted, scaling = alpha/r)."""
    import numpy as np
    from gguf import GGUFReader

    head = read_header(path, with_vocab=False)
    if head.general_type != "adapter" or head.adapter_type != "lora":
        raise InvalidPackageError(f"{path}: not a LoRA adapter GGUF (general.type={head.general_type!r}, adapter.type={head.adapter_type!r})")
    if head.architecture != "llama":
        raise InvalidPackageError(f"{path}: adapter architecture {head.architecture!r} is not supported", "llmos trains and merges Llama-architecture adapters")
    reader = GGUFReader(str(path), "r")
    by_gguf = {gguf_name(n, hp.n_layer): n for n in hf_tensor_names(hp.n_layer)}
    raw: dict[str, dict[str, Any]] = {}
    for t in reader.tensors:
        for suffix in (".lora_a", ".lora_b"):
            if t.name.endswith(suffix):
                base = t.name[: -len(suffix)]
                hf = by_gguf.get(base)
                if hf is None:
                    raise InvalidPackageError(f"{path}: tensor {t.name} names no Llama base tensor")
                shape = tuple(int(x) for x in reversed(t.shape))
                raw.setdefault(hf, {})[suffix] = np.asarray(t.data, dtype=np.float32).reshape(shape)
    alpha = head.lora_alpha or 0.0
    pairs: dict[str, LoraPair] = {}
    for hf, ab in raw.items():
        if ".lora_a" not in ab or ".lora_b" not in ab:
            raise InvalidPackageError(f"{path}: incomplete LoRA pair for {hf}")
        a, b = ab[".lora_a"], ab[".lora_b"]
        kind = _qk_kind(hf)
        if kind == "q":
            b = unpermute_qk(b, hp.n_head, hp.n_head)
        elif kind == "k":
            b = unpermute_qk(b, hp.n_head, hp.n_head_kv)
        r = a.shape[0]
        pairs[hf] = LoraPair(np.array(a, order="C", copy=True), np.array(b, order="C", copy=True), alpha / r if alpha else 1.0)
    meta = {"alpha": alpha, "name": head.name}
    return pairs, meta


# ---------------------------------------------------------------- from peft


def _module_weight_name(peft_module_name: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj`` -> ``model.layers.0.self_attn.q_proj.weight``."""
    name = peft_module_name
    for prefix in ("base_model.model.", "base_model."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name + ".weight"


def peft_model_pairs(model: Any, adapter_name: str = "default") -> dict[str, LoraPair]:
    """LoRA pairs of one adapter of an in-memory ``PeftModel``."""
    pairs: dict[str, LoraPair] = {}
    for mod_name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter_name not in lora_a:
            continue
        if getattr(module, "use_dora", {}).get(adapter_name, False):
            raise InvalidPackageError("DoRA adapters cannot be exported to llama.cpp", "train a plain LoRA (use_dora=False)")
        a = module.lora_A[adapter_name].weight.detach().float().cpu().numpy()
        b = module.lora_B[adapter_name].weight.detach().float().cpu().numpy()
        pairs[_module_weight_name(mod_name)] = LoraPair(a, b, float(module.scaling[adapter_name]))
    return pairs


def peft_dir_pairs(adapter_dir: str | Path) -> dict[str, LoraPair]:
    """LoRA pairs of a saved PEFT adapter folder (adapter_config.json + adapter_model.safetensors)."""
    import math
    import re

    from safetensors.numpy import load_file

    d = Path(adapter_dir)
    cfg = json.loads((d / "adapter_config.json").read_text())
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("use_dora"):
        raise InvalidPackageError(f"{d}: only plain LoRA adapters can be exported")
    tensors = load_file(str(d / "adapter_model.safetensors"))
    r0, a0 = int(cfg["r"]), float(cfg["lora_alpha"])
    rank_pat, alpha_pat = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}

    def lookup(pattern: dict, key: str, default: float) -> float:
        for pat, val in pattern.items():
            if re.match(rf"(.*\.)?{pat}$", key):
                return val
        return default

    pairs: dict[str, LoraPair] = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        mod = key.split(".lora_A.")[0]
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        r = int(lookup(rank_pat, mod, r0))
        alpha = float(lookup(alpha_pat, mod, a0))
        scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        pairs[_module_weight_name(mod)] = LoraPair(a.astype("float32"), b.astype("float32"), scaling)
    return pairs
