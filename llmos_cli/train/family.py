"""``llmos train A B C``: train a family of libraries so that their adapters stack.

Adapters trained apart interfere when they are attached together (docs/training.md,
"Stacking and interference").  A family published together can avoid it:

1. each library is trained as its ``[train]`` table says, dependencies first;
2. then, in rounds, each one continues from its adapter (``init``) with the
   family's other libraries attached as companions: its dependencies in the
   family always, the others as random subsets (``companion_sampling =
   "subsets"``).  They are given as library folders, so while one is on some
   of the batch asks its own questions with its answers: the adapter learns
   not to break what the others know.  A round later the others adapt to it.

``demo/build_demo.py`` builds the demo registry with this function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError, UsageError
from llmos_cli.fileio import atomic_path
from llmos_cli.pkg.manifest import load_manifest
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.train._deps import require_train_extra
from llmos_cli.train.lora import train_library


@dataclass
class Member:
    name: str
    src: Path
    adapter: Path
    deps: list[str] = field(default_factory=list)  # members it depends on, in family order


@dataclass
class CotrainOptions:
    rounds: int = 2
    steps: int = 150
    lr: float = 2e-3
    companion_prob: float = 0.5
    #: None: each library's own [train] value (companion_data_fraction, replay_fraction)
    data_fraction: float | None = None
    replay_fraction: float | None = None

    def validate(self) -> None:
        if self.rounds < 0:
            raise UsageError(f"rounds must be 0 or more, not {self.rounds}")
        if self.steps < 1:
            raise UsageError(f"co-training steps must be at least 1, not {self.steps}")
        if not 0 < self.companion_prob < 1:
            raise UsageError(f"the companions' probability must be in (0, 1), not {self.companion_prob}")


@dataclass
class FamilyResult:
    order: list[str]
    first: list[Any]  # TrainResult, one per library (empty with skip_first)
    rounds: list[list[Any]]  # per round, one TrainResult per library
    options: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "first": [r.to_json() for r in self.first],
            "rounds": [[r.to_json() for r in rnd] for rnd in self.rounds],
            "cotrain": self.options,
            "adapters": {r.library: str(r.adapter) for r in (self.rounds[-1] if self.rounds else self.first)},
        }


def plan_family(srcs: list[str | Path]) -> list[Member]:
    """The libraries in dependency order, each with the family members it depends on."""

    loaded = []
    for s in srcs:
        src = Path(s)
        m = load_manifest(src)
        if m.kind != "library":
            raise InvalidPackageError(f"{m.name} is a {m.kind} package; only libraries carry adapters")
        loaded.append((src, m))
    names = [m.name for _, m in loaded]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"{dup[0]} is given twice")

    def satisfies(m: Any, req: Any) -> bool:
        if req.name == m.name:
            return req.matches(m.version)
        return req.name in m.meta.provides  # virtual names are unversioned

    members: dict[str, Member] = {}
    for src, m in loaded:
        deps: list[str] = []
        for dep in m.meta.depends:
            for alt in dep.alternatives:
                hit = next((o.name for _, o in loaded if o.name != m.name and satisfies(o, alt)), None)
                if hit:
                    if hit not in deps:
                        deps.append(hit)
                    break
        members[m.name] = Member(m.name, src, src / ((m.adapter.file if m.adapter else None) or "adapter.gguf"), deps)

    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = " -> ".join(visiting[visiting.index(name) :] + [name])
            raise UsageError(f"the libraries depend on each other in a cycle: {cycle}")
        visiting.append(name)
        for d in members[name].deps:
            visit(d)
        visiting.pop()
        order.append(name)

    for n in names:
        visit(n)
    return [members[n] for n in order]


def cotrain_round(
    members: list[Member],
    base: str,
    opts: CotrainOptions,
    *,
    device: str = "auto",
    threads: int | None = None,
    reporter: Reporter | None = None,
    paths: Any = None,
) -> list[Any]:
    """One Gauss-Seidel round: every member continues from its adapter in the others' company."""

    out = []
    for m in members:
        if not m.adapter.is_file():
            raise UsageError(f"{m.name} has no adapter to continue from ({m.adapter})", "train it first (leave out --skip-first)")
        comps = [f"{_member(members, d).src.absolute()}@1.0" for d in m.deps]
        comps += [f"{o.src.absolute()}@{opts.companion_prob}" for o in members if o.name != m.name and o.name not in m.deps]
        over = {
            "init": str(m.adapter.absolute()),
            "steps": opts.steps,
            "lr": opts.lr,
            "companions": comps,
            "companion_sampling": "subsets",
            "companion_data_fraction": opts.data_fraction,
            "replay_fraction": opts.replay_fraction,
        }
        with atomic_path(m.adapter, suffix=".cotrain.tmp") as tmp:
            res = train_library(m.src, base, overrides=over, device=device, threads=threads, out=tmp, evaluate=False, reporter=reporter, paths=paths)
        res.adapter = m.adapter
        out.append(res)
    return out


def _member(members: list[Member], name: str) -> Member:
    return next(m for m in members if m.name == name)


def train_family(
    srcs: list[str | Path],
    base: str,
    *,
    cotrain: CotrainOptions | None = None,
    skip_first: bool = False,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    threads: int | None = None,
    evaluate: bool = True,
    reporter: Reporter | None = None,
    paths: Any = None,
) -> FamilyResult:
    """Train every library (dependencies first), then co-train them for ``cotrain.rounds`` rounds."""

    require_train_extra("llmos train")
    rep = reporter or NullReporter()
    opts = cotrain or CotrainOptions()
    opts.validate()
    members = plan_family(srcs)
    rep.info(f"family: {' -> '.join(m.name for m in members)}; {opts.rounds} co-training round(s)")
    first = []
    if not skip_first:
        for m in members:
            first.append(train_library(m.src, base, overrides=overrides, device=device, threads=threads, evaluate=evaluate, reporter=rep, paths=paths))
    rounds = []
    for i in range(opts.rounds):
        rep.info(f"co-training round {i + 1}/{opts.rounds}")
        rounds.append(cotrain_round(members, base, opts, device=device, threads=threads, reporter=rep, paths=paths))
    return FamilyResult(
        [m.name for m in members],
        first,
        rounds,
        {
            "rounds": opts.rounds,
            "steps": opts.steps,
            "lr": opts.lr,
            "companion_prob": opts.companion_prob,
            "data_fraction": opts.data_fraction,
            "replay_fraction": opts.replay_fraction,
        },
    )
