"""``llmos train``: one library, or a family trained in dependency order then co-trained.

The CLI parses the flags into ``overrides`` (the ``[train]`` keys they replace)
and calls :func:`train`; with ``simulate`` nothing is trained and the plan comes
back as a dict (the ``--json`` data of ``llmos train --simulate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmos_cli.errors import UsageError
from llmos_cli.pkg.manifest import load_manifest
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.train.family import CotrainOptions, plan_family, train_family
from llmos_cli.train.lora import TrainOptions, train_library

DEVICES = ("auto", "cpu", "gpu", "cuda")


def train(
    srcs: list[Path],
    base: str,
    *,
    overrides: dict[str, Any],
    device: str = "auto",
    threads: int | None = None,
    output: Path | None = None,
    evaluate: bool = True,
    rounds: int | None = None,
    cotrain_steps: int | None = None,
    skip_first: bool = False,
    simulate: bool = False,
    reporter: Reporter | None = None,
) -> Any:
    """Train ``srcs[0]``'s adapter, or (several) the family; ``overrides`` may hold ``init`` (one library only)."""
    rep = reporter or NullReporter()
    if device not in DEVICES:
        raise UsageError(f"--device must be auto, cpu or gpu, not {device!r}")
    if len(srcs) > 1:
        return _family(srcs, base, overrides, device, threads, output, evaluate, rounds, cotrain_steps, skip_first, simulate, rep)
    if rounds is not None or skip_first:
        raise UsageError("--rounds and --skip-first co-train several libraries", "name all the libraries of the family")
    src = srcs[0]
    if simulate:
        m = load_manifest(src)
        opts = TrainOptions.from_manifest(m.train.options, overrides)
        target_file = output or (src / ((m.adapter.file if m.adapter else None) or "adapter.gguf"))
        return {"simulated": True, "library": m.name, "version": m.version, "base": base, "adapter": str(target_file), "options": opts.to_json()}
    return train_library(src, base, overrides=overrides, device=device, threads=threads, out=output, evaluate=evaluate, reporter=rep)


def _family(
    srcs: list[Path],
    base: str,
    overrides: dict[str, Any],
    device: str,
    threads: int | None,
    output: Path | None,
    evaluate: bool,
    rounds: int | None,
    cotrain_steps: int | None,
    skip_first: bool,
    simulate: bool,
    rep: Reporter,
) -> Any:
    if output or overrides.get("init"):
        raise UsageError("--output and --init take one library", "co-training writes each library's own adapter")
    opts = CotrainOptions()
    if rounds is not None:
        opts.rounds = rounds
    if cotrain_steps is not None:
        opts.steps = cotrain_steps
    opts.validate()
    if simulate:
        members = plan_family(list(srcs))
        return {
            "simulated": True,
            "order": [m.name for m in members],
            "depends": {m.name: m.deps for m in members},
            "first": not skip_first,
            "rounds": opts.rounds,
        }
    return train_family(
        list(srcs), base, cotrain=opts, skip_first=skip_first, overrides=overrides, device=device, threads=threads, evaluate=evaluate, reporter=rep
    )
