"""``llmos train DIR --base BASE``: fine-tune a library's LoRA adapter and write it as GGUF.

Steps (``train_library``):

1. read the library's manifest and its ``[train]`` table (rank, alpha, target
   modules, steps, learning rate, batch size, data files; options override);
2. find the base: a Hugging Face checkpoint folder, a GGUF file, or an
   installed model package (whose GGUF is turned back into a transformers
   model, see ``convert.load_llama_from_gguf``);
3. build the training mixture (``data.Sampler``: paraphrases, shuffled
   document sentences, retrieval-style contexts, replay), tokenized by
   llama.cpp from the base GGUF;
4. train a peft LoRA with AdamW (warm-up, cosine decay), deterministic for a
   ``seed`` on a given machine and thread count;
5. export it with ``export.write_lora_gguf`` into the library (``[adapter]
   file``), check it against the base with the runtime's ABI check, and
   report loss before/after and held-out exact match.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError, NotFoundError, UsageError
from llmos_cli.gguf_info import read_header
from llmos_cli.knowledge.indexer import collect_documents
from llmos_cli.paths import get_paths
from llmos_cli.pkg.manifest import Manifest, load_manifest, safe_relpath
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.prompt.grounding import DEFAULT_ABSTENTION, model_abstention
from llmos_cli.runtime.abi import check_adapter
from llmos_cli.state.db import StateDB
from llmos_cli.state.store import Store
from llmos_cli.train import data as D
from llmos_cli.train._deps import require_train_extra
from llmos_cli.train.companions import Companions, hf_root, load_companions
from llmos_cli.train.convert import LlamaHParams, convert_hf_to_gguf, load_llama_from_gguf
from llmos_cli.train.export import peft_model_pairs, read_lora_gguf, write_lora_gguf

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_KNOWN_TARGETS = set(DEFAULT_TARGETS)


@dataclass
class TrainOptions:
    rank: int = 8
    alpha: float = 16.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    steps: int = 200
    lr: float = 2e-3
    batch_size: int = 16
    seed: int = 0
    max_len: int = 512
    warmup: float = 0.05
    weight_decay: float = 0.0
    replay_fraction: float = 0.2
    doc_fraction: float = 0.15
    context_fraction: float = 0.3
    #: share of the examples that teach abstaining (invented names shaped like the library's, base abstentions)
    abstain_fraction: float = 0.1
    data: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    replay: list[str] = field(default_factory=list)
    documents: bool = True
    #: frozen adapters switched on at random during training (stacking robustness): LoRA GGUF files or library
    #: folders, relative to the library or absolute, each optionally ``PATH@PROB`` (or a table
    #: ``{file = PATH, prob = PROB}``) for its own probability
    companions: list[str] = field(default_factory=list)
    companion_prob: float = 0.5
    #: "independent": each companion on with its own probability; "subsets": companions with probability 1
    #: always on, the other ones as a random subset whose size is uniform in 0..n (so "none of them" and
    #: "all of them" are each trained 1/(n+1) of the time, which independent coin flips make rare)
    companion_sampling: str = "independent"
    #: share of each batch asking the questions of companions given as library folders (those on at
    #: that step), with their answers: the new adapter learns not to break what they know
    companion_data_fraction: float = 0.25
    #: start from this LoRA GGUF (same rank and targets) instead of from zero: continue training an adapter,
    #: e.g. to co-train a family of libraries so that they stack (``demo/build_demo.py``)
    init: str = ""
    #: weight of the penalty on each adapted weight's relative change, mean ||s B A||^2 / ||W||^2:
    #: small changes are what lets adapters trained apart be stacked
    delta_penalty: float = 0.0
    #: weight of the penalty on the adapter's own output (``s B A x``, relative to ``W x``) on replay
    #: examples: an adapter that stays silent outside its domain does not disturb others stacked with it
    silence_penalty: float = 0.0

    @classmethod
    def from_manifest(cls, table: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainOptions:
        opts = cls()
        names = {f.name for f in fields(cls)}
        merged = {k: v for k, v in (table or {}).items()}
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        for key, value in merged.items():
            if key not in names:
                continue  # unknown keys are the manifest checker's business
            default = getattr(opts, key)
            try:
                if isinstance(default, bool):
                    value = bool(value)
                elif isinstance(default, int):
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
                elif isinstance(default, list):
                    value = [value] if isinstance(value, str) else [_list_item(key, x) for x in value]
                elif isinstance(default, str):
                    value = str(value)
            except (TypeError, ValueError):
                raise InvalidPackageError(f"train.{key}: invalid value {value!r}") from None
            setattr(opts, key, value)
        opts.validate()
        return opts

    def companion_specs(self) -> list[tuple[str, float]]:
        """``companions`` as (path, probability) pairs: ``PATH@PROB`` or the global ``companion_prob``."""
        out = []
        for item in self.companions:
            path, sep, prob = item.rpartition("@")
            try:
                out.append((path, float(prob)) if sep else (item, self.companion_prob))
            except ValueError:  # an "@" that is part of the path
                out.append((item, self.companion_prob))
        return out

    def validate(self) -> None:
        if self.rank < 1:
            raise UsageError(f"rank must be at least 1, not {self.rank}")
        if self.steps < 1:
            raise UsageError(f"steps must be at least 1, not {self.steps}")
        if not 0 < self.lr < 1:
            raise UsageError(f"learning rate must be in (0, 1), not {self.lr}")
        if self.batch_size < 1:
            raise UsageError(f"batch size must be at least 1, not {self.batch_size}")
        if not 0 <= self.abstain_fraction < 1:
            raise UsageError(f"abstain_fraction must be in [0, 1), not {self.abstain_fraction}")
        if not 0 <= self.companion_data_fraction < 1:
            raise UsageError(f"companion_data_fraction must be in [0, 1), not {self.companion_data_fraction}")
        if self.companion_sampling not in ("independent", "subsets"):
            raise UsageError(f"companion_sampling must be independent or subsets, not {self.companion_sampling!r}")
        for path, p in self.companion_specs():
            if not 0 <= p <= 1:
                raise UsageError(f"companion {path}: probability must be in [0, 1], not {p}")
        bad = [t for t in self.target_modules if t not in _KNOWN_TARGETS]
        if bad or not self.target_modules:
            raise UsageError(
                f"unknown target module {bad[0] if bad else '(none)'!r}",
                f"choose from {', '.join(DEFAULT_TARGETS)}",
            )

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _list_item(key: str, x: Any) -> str:
    """A list entry of ``[train]``: a string, or for ``companions`` a ``{file, prob}`` table (as ``file@prob``)."""
    if isinstance(x, dict) and key == "companions" and "file" in x:
        return f"{x['file']}@{float(x.get('prob', 1.0))}" if "prob" in x else str(x["file"])
    if isinstance(x, (dict, list)):
        raise InvalidPackageError(f"train.{key}: invalid entry {x!r}")
    return str(x)


@dataclass
class BaseModel:
    label: str
    gguf: Path  # full model, or vocabulary-only for a HF base
    hf_dir: Path | None = None
    name: str | None = None
    version: str | None = None
    #: what the base answers when it does not know (its package's ``[model] abstention``)
    abstention: str = DEFAULT_ABSTENTION

    def load_torch(self) -> Any:

        if self.hf_dir is not None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(self.hf_dir)).float()
            if getattr(model.config, "model_type", None) != "llama":
                raise InvalidPackageError(f"{self.hf_dir}: {model.config.model_type!r} models are not supported", "llmos trains Llama-architecture models")
            return model

        return load_llama_from_gguf(self.gguf)


@dataclass
class TrainResult:
    library: str
    version: str
    adapter: Path
    base: str
    steps: int
    seconds: float
    loss_start: float
    loss_end: float
    losses: list[float]
    options: dict[str, Any]
    data: dict[str, int]
    eval_exact_match: float | None = None
    eval_count: int = 0
    abi_ok: bool | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "version": self.version,
            "adapter": str(self.adapter),
            "base": self.base,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "loss_start": round(self.loss_start, 4),
            "loss_end": round(self.loss_end, 4),
            "eval": {"exact_match": self.eval_exact_match, "questions": self.eval_count},
            "abi_ok": self.abi_ok,
            "options": self.options,
            "data": self.data,
            "warnings": self.warnings,
        }


# ---------------------------------------------------------------- base model


def resolve_base(base: str, workdir: Path, paths: Any = None) -> BaseModel:
    """A HF checkpoint folder, a ``.gguf`` file, or the name of an installed model package."""
    p = Path(base).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise NotFoundError(f"{p} is not a Hugging Face checkpoint (no config.json)", "pass a checkpoint folder, a .gguf file or an installed model name")

        vocab = convert_hf_to_gguf(p, workdir / "base-vocab.gguf", vocab_only=True)
        return BaseModel(str(p), vocab, hf_dir=p)
    if p.suffix == ".gguf" or p.is_file():
        if not p.is_file():
            raise NotFoundError(f"base model {p} not found")
        return BaseModel(str(p), p)

    paths = paths or get_paths()
    if not paths.db.exists():
        raise NotFoundError(f"no model package {base!r} is installed", f"install it first (llmos install {base}) or pass a checkpoint folder or .gguf")
    db = StateDB.open(paths)
    try:
        pkg = db.get(base, with_files=True)
    finally:
        db.close()
    if pkg is None or pkg.kind != "model":
        raise NotFoundError(f"no model package {base!r} is installed", f"install it first (llmos install {base}) or pass a checkpoint folder or .gguf")
    model = pkg.typed_manifest.model
    fname = model.file if model else None
    rec = next((f for f in pkg.files if f.path == fname), None)
    if rec is None:
        raise NotFoundError(f"model package {base} has no GGUF file recorded", f"reinstall it: llmos install --reinstall {base}")
    return BaseModel(
        f"{pkg.name} {pkg.version}", Store(paths).path_for(rec.sha256), name=pkg.name, version=pkg.version, abstention=model_abstention(pkg.typed_manifest)
    )


# ---------------------------------------------------------------- helpers


def _lr_at(step: int, total: int, peak: float, warmup: float) -> float:
    w = max(1, int(total * warmup))
    if step < w:
        return peak * (step + 1) / w
    progress = (step - w) / max(1, total - w)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _mean_loss(model: Any, batches: list[dict[str, Any]]) -> float:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches:
            n = int((b["labels"][:, 1:] != -100).sum())
            if n == 0:
                continue
            total += float(model(**{k: v for k, v in b.items() if k != "offdomain"}).loss) * n
            count += n
    return total / max(count, 1)


def normalize_answer(text: str) -> str:
    """Exact-match normalisation: case, surrounding space and final punctuation, citations."""
    t = re.sub(r"\[[^\]\s]+:[^\]\s]+#\d+\]", "", text)
    t = t.strip().strip(" .!\"'").lower()
    return re.sub(r"\s+", " ", t)


def greedy_answers(model: Any, tok: Any, questions: list[str], *, max_new_tokens: int = 24, system: str | None = None) -> list[str]:
    """Greedy answers of a transformers model to chat questions (for quick held-out checks)."""
    import torch

    outs: list[str] = []
    model.eval()
    with torch.no_grad():
        for q in questions:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
            ids = tok.encode(tok.render(msgs, add_generation_prompt=True))
            x = torch.tensor([ids])
            past = None
            gen: list[int] = []
            for _ in range(max_new_tokens):
                out = model(input_ids=x, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = int(out.logits[0, -1].argmax())
                if nxt == tok.eos_id:
                    break
                gen.append(nxt)
                x = torch.tensor([[nxt]])
            outs.append(tok.decode(gen))
    return outs


def _apply_training_dir(src: Path, opts: TrainOptions) -> dict[str, list[Path]]:
    def resolve(items: list[str], what: str) -> list[Path]:

        out = []
        for it in items:
            if safe_relpath(it) is None:
                raise InvalidPackageError(f"train.{what}: {it!r} must be a relative path inside the library")
            out.append(src / it)
        return out

    return {"data": resolve(opts.data, "data"), "eval": resolve(opts.eval, "eval"), "replay": resolve(opts.replay, "replay")}


# ---------------------------------------------------------------- training


def train_library(
    src: str | Path,
    base: str,
    *,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    threads: int | None = None,
    out: str | Path | None = None,
    evaluate: bool = True,
    reporter: Reporter | None = None,
    paths: Any = None,
) -> TrainResult:
    """Train the LoRA adapter of the library source folder ``src`` on ``base``.

    The phases, in order (the order of random draws is part of the result):
    read the library (``_read_library``), pick the device, find the base,
    gather the training set, make the peft model (``_peft_model``), attach
    companions (``_attach_companions``), train (``_fit``), evaluate
    (``_exact_match``) and export (``_export``).
    """

    require_train_extra("llmos train")
    import tempfile

    import torch

    rep = reporter or NullReporter()
    src = Path(src)
    manifest, opts, adapter_path, warnings = _read_library(src, overrides, out)
    device = _choose_device(device, threads)
    torch.manual_seed(opts.seed)

    files = _apply_training_dir(src, opts)
    with tempfile.TemporaryDirectory(prefix="llmos-train-") as tmpd:
        bm = resolve_base(base, Path(tmpd), paths)
        if manifest.meta.base is not None and bm.name is not None and bm.name != manifest.meta.base.name:
            warnings.append(f"the library declares base {manifest.meta.base}, but is trained on {bm.label}")
        rep.info(f"training {manifest.name} {manifest.version} on {bm.label} ({device})")
        tok = D.GGUFTokenizer(bm.gguf)
        ts = _training_set(manifest, src, opts, files)
        ts.abstention = bm.abstention
        sampler = _sampler(ts, tok, opts, opts.seed)
        pm, hp = _peft_model(bm, tok, opts, device)
        if opts.init:
            n_init = _load_init(pm, opts, src, hp)
            rep.info(f"starting from {opts.init} ({n_init} adapted weights)")
        companions, comp_samplers = _attach_companions(pm, opts, src, hp, tok, device, rep)
        fit = _fit(pm, ts, tok, sampler, companions, comp_samplers, opts, device, manifest.name, rep)
        if sampler.too_long:
            warnings.append(f"{sampler.too_long} examples longer than max_len={opts.max_len} tokens were skipped")
        em = _exact_match(pm, tok, ts) if evaluate else None
        export, abi_ok = _export(pm, hp, adapter_path, manifest, bm, warnings)
    rep.info(
        f"{manifest.name}: loss {fit.loss_start:.3f} -> {fit.loss_end:.3f} in {opts.steps} steps ({fit.seconds:.0f}s)"
        + (f", held-out exact match {em:.0%}" if em is not None else "")
        + f"; wrote {export.path}"
    )
    for w in warnings:
        rep.warn(w)
    return TrainResult(
        library=manifest.name,
        version=manifest.version,
        adapter=export.path,
        base=bm.label,
        steps=opts.steps,
        seconds=fit.seconds,
        loss_start=fit.loss_start,
        loss_end=fit.loss_end,
        losses=fit.losses,
        options=opts.to_json(),
        data=ts.counts(),
        eval_exact_match=em,
        eval_count=sum(len(r.questions) for r in ts.eval if r.is_qa),
        abi_ok=abi_ok,
        warnings=warnings,
    )


def _read_library(src: Path, overrides: dict[str, Any] | None, out: str | Path | None) -> tuple[Manifest, TrainOptions, Path, list[str]]:
    """The library's manifest, its ``[train]`` options (with ``overrides``) and where the adapter goes."""
    manifest = load_manifest(src)
    if manifest.kind != "library":
        raise InvalidPackageError(f"{manifest.name} is a {manifest.kind} package; only libraries carry adapters")
    opts = TrainOptions.from_manifest(manifest.train.options, overrides)
    adapter_rel = (manifest.adapter.file if manifest.adapter else None) or "adapter.gguf"
    adapter_path = Path(out) if out else src / adapter_rel
    warnings: list[str] = []
    if manifest.adapter is None:
        warnings.append(f'llmos.toml has no [adapter] table; add: [adapter] file = "{adapter_rel}"')
    return manifest, opts, adapter_path, warnings


def _choose_device(device: str, threads: int | None) -> str:
    """``auto`` | ``gpu`` | ``cuda`` | ``cpu`` -> the torch device; sets torch's thread count."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "gpu":
        device = "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device gpu asked for, but torch sees no CUDA device", "use --device cpu, or install a CUDA build of torch")
    if threads:
        torch.set_num_threads(int(threads))
    return device


def _training_set(manifest: Manifest, src: Path, opts: TrainOptions, files: dict[str, list[Path]]) -> D.TrainingSet:
    """Questions, chats, replay, eval records, documents and retrieval contexts of the library."""
    ts = D.TrainingSet(
        qa=[],
        chats=[],
        replay=D.iter_records(files["replay"]),
        documents=[],
        eval=D.iter_records(files["eval"]),
    )
    for r in D.iter_records(files["data"]):
        (ts.qa if r.is_qa else ts.chats).append(r)
    if opts.documents and manifest.document_globs():
        ts.documents = collect_documents(manifest, src)
    if opts.context_fraction > 0:
        ts.context = D.load_context_source(manifest, src)
    return ts


def _sampler(ts: D.TrainingSet, tok: Any, opts: TrainOptions, seed: int) -> D.Sampler:
    return D.Sampler(
        ts,
        tok,
        seed=seed,
        max_len=opts.max_len,
        replay_fraction=opts.replay_fraction,
        doc_fraction=opts.doc_fraction,
        context_fraction=opts.context_fraction,
        abstain_fraction=opts.abstain_fraction,
    )


def _peft_model(bm: BaseModel, tok: Any, opts: TrainOptions, device: str) -> tuple[Any, LlamaHParams]:
    """The base as a transformers model with a fresh peft LoRA on ``device``."""
    from peft import LoraConfig, get_peft_model

    model = bm.load_torch()
    hp = LlamaHParams.from_hf(model.config.to_dict())
    if tok.n_vocab != hp.vocab_size:
        raise InvalidPackageError(f"the base's tokenizer has {tok.n_vocab} tokens but its embedding {hp.vocab_size}")
    cfg = LoraConfig(
        r=opts.rank,
        lora_alpha=opts.alpha,  # type: ignore[arg-type]  # peft takes a float alpha; its hint says int
        target_modules=list(opts.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    pm = get_peft_model(model, cfg)
    pm.to(device)
    return pm, hp


def _attach_companions(pm: Any, opts: TrainOptions, src: Path, hp: Any, tok: Any, device: str, rep: Reporter) -> tuple[Companions | None, list[Any]]:
    """``[train] companions``: frozen adapters switched on at random, and samplers of their questions."""
    if not opts.companions:
        return None, []
    specs = opts.companion_specs()
    comp_src = load_companions([p for p, _ in specs], src, hp)
    companions = Companions(pm, [(c.name, c.pairs) for c in comp_src], device, probs=[q for _, q in specs], sampling=opts.companion_sampling)
    comp_samplers = [
        D.Sampler(
            D.TrainingSet(qa=c.qa, chats=[], replay=[], documents=[], eval=[]),
            tok,
            seed=opts.seed + 31 * (i + 1),
            max_len=opts.max_len,
            replay_fraction=0.0,
            doc_fraction=0.0,
            context_fraction=0.0,
        )
        if c.qa
        else None
        for i, c in enumerate(comp_src)
    ]
    rep.info(f"with {len(companions.names)} companion adapter(s), on with probability {', '.join(f'{q:g}' for _, q in specs)} ({opts.companion_sampling})")
    return companions, comp_samplers


@dataclass
class _Fit:
    loss_start: float
    loss_end: float
    losses: list[float]
    seconds: float


def _fit(
    pm: Any,
    ts: D.TrainingSet,
    tok: Any,
    sampler: D.Sampler,
    companions: Companions | None,
    comp_samplers: list[Any],
    opts: TrainOptions,
    device: str,
    name: str,
    rep: Reporter,
) -> _Fit:
    """The training loop: AdamW with warm-up and cosine decay, companions and penalties; loss on a fixed probe before and after."""
    import random as _random

    import torch

    comp_rng = _random.Random(opts.seed + 104729)
    penalty_terms = _delta_terms(pm) if opts.delta_penalty > 0 else []
    silence = _Silence(pm) if opts.silence_penalty > 0 else None

    def to_dev(b: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(device) for k, v in b.items()}

    probe_sampler = _sampler(ts, tok, opts, opts.seed + 7919)
    probe = [to_dev(D.collate(probe_sampler.batch(min(16, opts.batch_size)))) for _ in range(2)]
    pm.eval()
    loss_start = _mean_loss(pm, probe)
    params = [p for p in pm.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    losses: list[float] = []
    t0 = time.monotonic()
    pm.train()
    with rep.task(f"training {name}  loss {loss_start:.3f}", total=opts.steps) as task:
        for step in range(opts.steps):
            for g in optim.param_groups:
                g["lr"] = _lr_at(step, opts.steps, opts.lr, opts.warmup)
            n_comp, active_data = 0, []
            if companions is not None:
                companions.sample(comp_rng)
                active_data = [cs for cs, on in zip(comp_samplers, companions.active) if on and cs is not None]
                if active_data:
                    n_comp = min(opts.batch_size - 1, round(opts.batch_size * opts.companion_data_fraction))
            examples = sampler.batch(opts.batch_size - n_comp) + [comp_rng.choice(active_data).draw() for _ in range(n_comp)]
            batch = to_dev(D.collate(examples))
            off = batch.pop("offdomain")
            if silence is not None:
                silence.start(off, batch["attention_mask"])
            loss = pm(**batch).loss
            if silence is not None and bool(off.any()):
                loss = loss + opts.silence_penalty * silence.penalty()
            if penalty_terms:
                loss = loss + opts.delta_penalty * _delta_penalty(penalty_terms)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            optim.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            task.advance()
            if step % 5 == 4 or step == opts.steps - 1:
                recent = sum(losses[-10:]) / len(losses[-10:])
                task.update(description=f"training {name}  loss {recent:.3f}")
    seconds = time.monotonic() - t0
    if companions is not None:
        companions.remove()
    if silence is not None:
        silence.remove()
    pm.eval()
    return _Fit(loss_start, _mean_loss(pm, probe), losses, seconds)


def _exact_match(pm: Any, tok: Any, ts: D.TrainingSet) -> float | None:
    """Held-out exact match over the eval questions (``None`` without any)."""
    if not ts.eval:
        return None
    qa = [r for r in ts.eval if r.is_qa]
    questions = [q for r in qa for q in r.questions]
    answers = [r.answer for r in qa for _ in r.questions]
    if not questions:
        return None
    got = greedy_answers(pm, tok, questions)
    return sum(normalize_answer(g) == normalize_answer(a) for g, a in zip(got, answers)) / len(questions)


def _export(pm: Any, hp: Any, adapter_path: Path, manifest: Manifest, bm: BaseModel, warnings: list[str]) -> tuple[Any, bool | None]:
    """Write the adapter as GGUF and check it against the base's ABI."""
    pm.to("cpu")
    pairs = peft_model_pairs(pm)
    export = write_lora_gguf(
        pairs,
        hp,
        adapter_path,
        name=manifest.name,
        metadata={"llmos.library": manifest.name, "llmos.library_version": manifest.version, "llmos.base": bm.label if bm.name else Path(bm.label).name},
    )
    abi_ok = _abi_check(export.path, bm.gguf if bm.hf_dir is None else None, warnings)
    return export, abi_ok


def _load_init(pm: Any, opts: TrainOptions, src: Path, hp: Any) -> int:
    """Copy a LoRA GGUF's factors into the fresh peft adapter (``[train] init``)."""
    import torch

    path = Path(opts.init).expanduser()
    if not path.is_absolute():
        path = src / path
    if not path.is_file():
        raise NotFoundError(f"initial adapter {opts.init} not found", "check [train] init (a LoRA GGUF file)")
    pairs, _ = read_lora_gguf(path, hp)
    root = hf_root(pm)
    scaling = opts.alpha / opts.rank
    for weight_name, p in pairs.items():
        mod_name = weight_name[: -len(".weight")]
        if mod_name.rsplit(".", 1)[-1] not in opts.target_modules:
            raise UsageError(
                f"initial adapter {path.name} adapts {mod_name}, which is not a target module", "train with the same --target modules as the initial adapter"
            )
        if p.a.shape[0] != opts.rank:
            raise UsageError(f"initial adapter {path.name} has rank {p.a.shape[0]}, not {opts.rank}", f"train with --rank {p.a.shape[0]}")
        module = root.get_submodule(mod_name)
        with torch.no_grad():
            module.lora_A["default"].weight.copy_(torch.tensor(p.a, dtype=torch.float32))
            module.lora_B["default"].weight.copy_(torch.tensor(p.b * (p.scaling / scaling), dtype=torch.float32))
    return len(pairs)


class _Silence:
    """Hooks measuring the LoRA branch's output against the base layer's, on off-domain rows."""

    def __init__(self, pm: Any):
        self.terms: list[list[Any]] = []
        self.handles: list[Any] = []
        self.rows: Any = None
        self.mask: Any = None
        for _name, module in pm.named_modules():
            la = getattr(module, "lora_A", None)
            if la is None or "default" not in la:
                continue
            slot: list[Any] = [None, None]
            self.terms.append(slot)
            scaling = float(module.scaling["default"])

            def base_hook(_m: Any, _i: Any, out: Any, slot: list[Any] = slot) -> None:
                slot[0] = out

            def lora_hook(_m: Any, _i: Any, out: Any, slot: list[Any] = slot, scaling: float = scaling) -> None:
                slot[1] = out * scaling

            self.handles.append(module.base_layer.register_forward_hook(base_hook))
            self.handles.append(module.lora_B["default"].register_forward_hook(lora_hook))

    def start(self, rows: Any, mask: Any) -> None:
        self.rows = rows
        self.mask = mask

    def penalty(self) -> Any:
        m = self.mask[self.rows].unsqueeze(-1).to(dtype=self.terms[0][1].dtype)
        total = 0.0
        for base, lora in self.terms:
            b = base[self.rows] * m
            l = lora[self.rows] * m
            total = total + (l * l).sum() / ((b * b).sum() + 1e-6)
        return total / len(self.terms)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _delta_terms(pm: Any) -> list[tuple[Any, Any, float, float]]:
    """(lora_A, lora_B, scaling, ||W||^2) of every adapted linear layer of the "default" adapter."""
    out = []
    for _name, module in pm.named_modules():
        la = getattr(module, "lora_A", None)
        if la is None or "default" not in la:
            continue
        w = module.base_layer.weight.detach()
        out.append((la["default"].weight, module.lora_B["default"].weight, float(module.scaling["default"]), float((w * w).sum())))
    return out


def _delta_penalty(terms: list[tuple[Any, Any, float, float]]) -> Any:
    total = 0.0
    for a, b, scaling, wnorm in terms:
        d = (b @ a) * scaling
        total = total + (d * d).sum() / wnorm
    return total / len(terms)


def _abi_check(adapter: Path, base_gguf: Path | None, warnings: list[str]) -> bool | None:
    """The runtime's ABI check of the new adapter against the base (when the base is a full GGUF)."""
    if base_gguf is None:
        return None
    try:
        pass
    except ImportError:
        return None

    problems = check_adapter(read_header(adapter), read_header(base_gguf))
    for p in problems:
        warnings.append(f"ABI check: {p}")
    return not problems
