"""Frozen companion adapters switched on at random while a library trains.

Adapters trained alone interfere when stacked: each was fitted to the base's
activations only.  ``llmos train`` can attach other LoRA adapters (the
library's dependencies, or stand-in adapters of other domains), frozen, each
switched on with probability ``companion_prob`` at every step, so the new
adapter learns to do its job whatever else is attached -- the situation
``llmos run`` puts it in.  They are added with forward hooks on the linear
layers (``y += B (A x) * scaling``), never trained and never exported.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import NotFoundError
from llmos_cli.pkg.manifest import load_manifest
from llmos_cli.train.data import iter_records
from llmos_cli.train.export import read_lora_gguf


class Companions:
    def __init__(
        self, model: Any, adapters: list[tuple[str, dict[str, Any]]], device: str = "cpu", probs: list[float] | None = None, sampling: str = "independent"
    ):
        import torch

        self.sampling = sampling
        self.names = [n for n, _ in adapters]
        self.probs = list(probs) if probs is not None else [0.5] * len(adapters)
        self.active = [False] * len(adapters)
        self._handles: list[Any] = []
        by_module: dict[str, list[tuple[int, Any, Any]]] = {}
        for idx, (_name, pairs) in enumerate(adapters):
            for weight_name, p in pairs.items():
                a = torch.tensor(p.a, dtype=torch.float32, device=device)
                b = torch.tensor(p.b * p.scaling, dtype=torch.float32, device=device)
                by_module.setdefault(weight_name[: -len(".weight")], []).append((idx, a, b))
        root = hf_root(model)
        for mod_name, items in by_module.items():
            module = root.get_submodule(mod_name)
            self._handles.append(module.register_forward_hook(self._hook(items)))

    def _hook(self, items: list[tuple[int, Any, Any]]) -> Any:
        def hook(_module: Any, inputs: tuple[Any, ...], output: Any) -> Any:
            x = inputs[0]
            for idx, a, b in items:
                if self.active[idx]:
                    output = output + (x @ a.T) @ b.T
            return output

        return hook

    def sample(self, rng: random.Random) -> None:
        """Switch companions on for one step (see ``sample_active``)."""
        self.active = sample_active(self.probs, self.sampling, rng)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def sample_active(probs: list[float], sampling: str, rng: random.Random) -> list[bool]:
    """Which companions are on for one step.

    ``independent``: each with its own probability (1: always, 0: never).  ``subsets``: the
    probability-1 ones always, the optional ones (0 < p < 1) as a random subset of uniformly
    drawn size, so that training sees "none" and "all" as often as any other size.
    """
    if sampling == "subsets":
        optional = [i for i, p in enumerate(probs) if 0 < p < 1]
        chosen = set(rng.sample(optional, rng.randint(0, len(optional))))
        return [p >= 1 or i in chosen for i, p in enumerate(probs)]
    return [rng.random() < p for p in probs]


def hf_root(model: Any) -> Any:
    """The transformers model inside a PeftModel (module names as in the HF checkpoint)."""
    inner = getattr(model, "base_model", None)
    inner = getattr(inner, "model", None)
    return inner if inner is not None else model


@dataclass
class CompanionSource:
    """One companion: its LoRA factors and, for a library folder, its own training questions."""

    name: str
    pairs: dict[str, Any]
    qa: list[Any] = field(default_factory=list)


def load_companions(paths: list[str], src: Path, hp: Any) -> list[CompanionSource]:
    """Companions given as LoRA GGUF files, or as library source folders.

    A library folder brings its ``[adapter]`` file and its ``[train] data`` questions: while it is
    on, some of the batch asks its questions with its answers, so the adapter being trained learns
    not to break what the companion knows (not only the base's behaviour).
    """

    out = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_absolute():
            path = src / path
        qa: list[Any] = []
        if path.is_dir():
            m = load_manifest(path)
            adapter = path / ((m.adapter.file if m.adapter else None) or "adapter.gguf")
            if not adapter.is_file():
                raise NotFoundError(f"companion library {p} has no adapter ({adapter.name})", "train that library first")
            data = [path / d for d in m.train.data]
            missing = [d for d in data if not d.is_file()]
            if missing:
                raise NotFoundError(f"companion library {p}: training data {missing[0].name} not found")
            qa = [r for r in iter_records(data) if r.is_qa]
            name, path = m.name, adapter
        elif path.is_file():
            name = path.name
        else:
            raise NotFoundError(f"companion adapter {p} not found", "check [train] companions (LoRA GGUF files or library folders)")
        pairs, _ = read_lora_gguf(path, hp)
        out.append(CompanionSource(name, pairs, qa))
    return out
