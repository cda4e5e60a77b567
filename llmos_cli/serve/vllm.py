"""``llmos serve --engine vllm [--print]``: the ``vllm serve`` command for the installed state.

vLLM reads PEFT adapters (not GGUF) and applies one LoRA per request, so:

* every installed library with an adapter that fits the model is exported
  (``app/export.py``) and served as the LoRA ``MODEL+LIB`` (``MODEL+LIB:0.5``
  when its scale is not 1), the names ``llmos serve`` lists for it;
* the attached stack, when it holds two or more adapters, is one ``cat``-merged
  adapter named ``MODEL+LIB1+LIB2:0.5`` (again ``llmos serve``'s name);
* every stack exported before with ``llmos export A+B`` (without ``-o``) under
  ``$LLMOS_HOME/exports/MODEL/`` is served too, unless a source changed since;
* the attached stack is also served as ``default`` (in ``llmos serve`` too,
  ``model: "default"`` is the default model with its attached libraries);
* the base is served as ``MODEL`` (the bare base: a vLLM LoRA cannot share
  the base's name, so on vLLM ``MODEL`` has no libraries).

The command is ``vllm serve BASE --served-model-name MODEL --host H --port P
--enable-lora --max-lora-rank R --max-loras N --lora-modules NAME=PATH...``
followed by ``--vllm-arg`` values (tensor/pipeline parallel, Ray, ...).  ``R``
is the smallest rank vLLM accepts that holds the largest export.  An API key
goes to vLLM as ``VLLM_API_KEY`` in its environment, never on the command line.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.app.export import ExportLib, ExportResult, export_libs, exports_dir, hf_base, stack_id
from llmos_cli.errors import NotFoundError, RuntimeFailure, UsageError
from llmos_cli.paths import Paths, get_paths
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.runtime.models import resolve_model
from llmos_cli.runtime.stack import base_matches, build_stack, check_library
from llmos_cli.serve.bind import check_bind as _check_bind
from llmos_cli.state import transaction as tx
from llmos_cli.train.peft_export import PROVENANCE, vllm_rank

DEFAULT_PORT = 8080  # llmos serve's, so that clients need no change
#: at most this many different adapters in one vLLM batch unless --max-loras says otherwise
MAX_LORAS_CAP = 4
#: the LoRA name of the attached stack (``model: "default"`` means the same in ``llmos serve``)
DEFAULT_NAME = "default"


@dataclass
class VllmPlan:
    argv: list[str]
    model: str
    base_model: str
    modules: dict[str, str]  # LoRA name -> PEFT folder
    exports: list[ExportResult]
    notes: list[str] = field(default_factory=list)
    launched: bool = False
    exit_code: int | None = None

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "command": self.command,
            "model": self.model,
            "base_model": self.base_model,
            "lora_modules": self.modules,
            "exports": [e.to_json() for e in self.exports],
            "notes": self.notes,
            "launched": self.launched,
            "exit_code": self.exit_code,
        }


def check_bind(host: str, api_key: str | None) -> None:
    """As ``llmos serve``: binding beyond loopback needs an API key."""
    _check_bind(host, api_key, "vLLM gets it as VLLM_API_KEY")


def _lib(sl: Any) -> ExportLib:
    return ExportLib(sl.name, sl.version, sl.base, sl.adapter, sl.scale, "installed", sl.adapter.name)


def _earlier_exports(paths: Paths, model: str, current: set[str], shas: dict[str, str], base: str, notes: list[str]) -> dict[str, str]:
    """Stacks exported before under exports/MODEL/ whose sources are still what is installed."""
    found: dict[str, str] = {}
    folder = exports_dir(paths) / model
    if not folder.is_dir():
        return found
    for d in sorted(folder.iterdir()):
        prov_file = d / PROVENANCE
        if d.name in current or not prov_file.is_file():
            continue
        try:
            prov = json.loads(prov_file.read_text())
            libs = prov["libraries"]
            fresh = all(shas.get(lib["name"]) == lib["adapter_sha256"] for lib in libs) and prov["model"]["gguf_sha256"] == shas.get("")
            same_base = prov["base_model"] == base
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not fresh:
            notes.append(f"{d.name} left out: a library or the model changed since it was exported (export it again)")
        elif not same_base:
            notes.append(f"{d.name} left out: exported for base {prov['base_model']}, not {base} (export it again)")
        else:
            found[str(prov["stack"])] = str(d)
    return found


def plan_vllm(
    *,
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    base_model: str | None = None,
    max_loras: int | None = None,
    extra_args: list[str] | None = None,
    executable: str = "vllm",
    reporter: Reporter | None = None,
    paths: Paths | None = None,
) -> VllmPlan:
    """Export what the installed state needs and build the ``vllm serve`` argv (nothing is launched)."""
    rep = reporter or NullReporter()
    paths = paths or get_paths()
    if max_loras is not None and max_loras < 1:
        raise UsageError("--max-loras must be at least 1")
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port")
    notes: list[str] = []
    with tx.open_state(paths, "serve", write=False, reporter=rep) as db:
        minfo = resolve_model(db, paths, model, rep)
        stack = build_stack(db, paths, model=minfo.name, reporter=rep)
        singles: list[Any] = []
        for name, pkg in db.installed().items():
            if pkg.kind != "library":
                continue
            sl = next((x for x in stack.libraries + stack.left_out if x.name == name), None)
            if sl is None:
                continue
            if sl.adapter is None:
                notes.append(f"{name} left out: no adapter (its knowledge and tools run only under llmos serve)")
            elif base_matches(sl.base, minfo) is False:
                notes.append(f"{name} left out: built for base {sl.base}, not {minfo.name}")
            else:
                if sl.fits is None:
                    check_library(sl, stack.model_header)
                if sl.fits is False:
                    notes.append(f"{name} left out: its adapter does not fit {minfo.name}: {sl.problems[0]}")
                else:
                    singles.append(sl)
    exports: list[ExportResult] = []
    for sl in singles:
        exports.append(export_libs([_lib(sl)], minfo, base_model=base_model, reporter=rep, paths=paths))
    attached = [sl for sl in stack.libraries if sl in singles]
    if len(attached) >= 2:
        exports.append(export_libs([_lib(sl) for sl in attached], minfo, base_model=base_model, reporter=rep, paths=paths))
    modules = {e.stack: str(e.out) for e in exports}
    if attached:  # "default" is the default model with its attached libraries, as in llmos serve
        modules[DEFAULT_NAME] = modules[stack_id(minfo.name, [_lib(sl) for sl in attached])]
    shas = {sl.name: sl.adapter.name for sl in singles}
    shas[""] = minfo.path.name if minfo.origin == "installed" else ""
    if exports:
        base = exports[0].base_model
    else:
        base, _src, warnings = hf_base(minfo, paths, base_model, rep)
        for w in warnings:
            rep.warn(w)
    modules.update(_earlier_exports(paths, minfo.name, {Path(p).name for p in modules.values()} | set(modules), shas, base, notes))
    argv = [executable, "serve", base, "--served-model-name", minfo.name, "--host", host, "--port", str(port)]
    if modules:
        ranks = [_rank_of(Path(p)) for p in modules.values()]
        distinct = len(set(modules.values()))
        argv += ["--enable-lora", "--max-lora-rank", str(vllm_rank(max(ranks))), "--max-loras", str(max_loras or min(distinct, MAX_LORAS_CAP))]
        argv += ["--lora-modules", *(f"{name}={path}" for name, path in sorted(modules.items()))]
    else:
        notes.append(f"no library adapter fits {minfo.name}: vLLM serves the bare base")
    argv += list(extra_args or [])
    for n in notes:
        rep.info(n)
    return VllmPlan(argv, minfo.name, base, dict(sorted(modules.items())), exports, notes)


def _rank_of(folder: Path) -> int:
    try:
        return int(json.loads((folder / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def launch(plan: VllmPlan, *, api_key: str | None = None) -> VllmPlan:
    """Run the planned ``vllm serve`` until it exits; its exit code is ``plan.exit_code``."""
    exe = shutil.which(plan.argv[0])
    if exe is None:
        raise NotFoundError(
            f"{plan.argv[0]!r} is not installed (vLLM is the engine for GPUs and clusters)",
            "pip install vllm on a machine with a GPU, or print the command with --print and run it there",
        )
    env = dict(os.environ)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    try:
        proc = subprocess.run([exe, *plan.argv[1:]], env=env, check=False)
    except OSError as exc:
        raise RuntimeFailure(f"cannot start {exe}: {exc}") from None
    plan.launched = True
    plan.exit_code = proc.returncode
    return plan
