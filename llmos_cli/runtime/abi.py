"""ABI check: does a LoRA adapter fit a base model?  Run BEFORE llama.cpp sees the adapter.

llama-cpp-python 0.3.x gets a NULL pointer back from ``llama_adapter_lora_init``
on a wrong file and then crashes the process, so every rule llama.cpp enforces
on load (``llama_adapter_lora_init_impl`` in ``src/llama-adapter.cpp``) is
checked here first, from the GGUF headers alone:

* ``general.type`` is ``adapter`` and ``adapter.type`` is ``lora``;
* ``general.architecture`` equals the base's;
* every tensor is ``<base tensor>.lora_a`` or ``.lora_b`` (``*_norm.weight``
  tensors are tolerated and ignored, as llama.cpp does);
* every pair is complete and names a tensor the base has;
* every ``.lora_a``/``.lora_b`` tensor has a type llama.cpp can multiply
  with (``LORA_TENSOR_TYPES``).  llama.cpp's loader does *not* check types:
  an I32 or F64 pair loads, then the first decode segfaults in ggml's matrix
  product.  The allowed set is the float types and the legacy quantised
  types, each loaded and run for real by ``tests/test_runtime_abi.py``;
  K-quants, IQ and ternary types are refused (fail closed) because gguf-py
  cannot write them for that test;
* shapes fit.  In GGUF order (fastest-varying dimension first) a base weight
  ``W`` is ``[in, out]``, ``lora_a`` is ``[in, r]`` and ``lora_b`` is
  ``[r, out]`` (PEFT's ``lora_A`` ``(r, in)`` and ``lora_B`` ``(out, r)`` as
  written by numpy).  So ``a[0] == W[0]``, ``b[1] == W[1]``, ``a[1] == b[0]``.
  ``token_embd.weight`` is looked up by row, and its pair is stored flipped:
  ``b[1] == W[0]`` and ``a[1] == W[1]``.

The effective update is ``W + scale * (alpha / r) * B @ A`` with ``r`` taken
from ``lora_b`` (``alpha`` missing or 0: ``W + scale * B @ A``).

``check_adapter(adapter_header, base_header) -> list[AbiProblem]`` reports
every problem; ``ensure_adapter_fits`` raises ``AbiError`` naming the first.
Task B's ``llmos check`` and Task C's install may call either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmos_cli.errors import AbiError, InvalidPackageError
from llmos_cli.gguf_info import GGUFHeader, read_header
from llmos_cli.pkg.manifest import Manifest

LORA_A = ".lora_a"
LORA_B = ".lora_b"

#: tensor types of a LoRA pair that llama.cpp 0.3.36 loads *and* runs (see the module docstring)
LORA_TENSOR_TYPES = frozenset({"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"})


@dataclass(frozen=True)
class AbiProblem:
    code: str  # not-adapter | not-lora | arch-mismatch | unexpected-tensor | tensor-type | no-tensors | incomplete-pair | unknown-tensor | shape-mismatch | rank-mismatch
    message: str
    tensor: str | None = None

    def to_json(self) -> dict:
        return {"code": self.code, "message": self.message, "tensor": self.tensor}

    def __str__(self) -> str:
        return self.message


def _pairs(adapter: GGUFHeader) -> tuple[dict[str, dict[str, tuple[int, ...]]], list[str]]:
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    unexpected: list[str] = []
    for name, shape in adapter.tensors.items():
        if name.endswith(LORA_A):
            pairs.setdefault(name[: -len(LORA_A)], {})["a"] = shape
        elif name.endswith(LORA_B):
            pairs.setdefault(name[: -len(LORA_B)], {})["b"] = shape
        elif name.endswith("_norm.weight"):
            continue  # llama.cpp skips these
        else:
            unexpected.append(name)
    return pairs, unexpected


def lora_targets(adapter: GGUFHeader) -> list[str]:
    """Base tensor names an adapter modifies."""
    return sorted(_pairs(adapter)[0])


def lora_rank(adapter: GGUFHeader) -> int | None:
    """The largest rank among the adapter's pairs (from ``lora_b``'s first dimension)."""
    ranks = [p["b"][0] for p in _pairs(adapter)[0].values() if p.get("b")]
    return max(ranks) if ranks else None


def type_problems(adapter: GGUFHeader) -> list[AbiProblem]:
    """LoRA tensors whose type would crash llama.cpp at the first decode."""
    out: list[AbiProblem] = []
    allowed = ", ".join(sorted(LORA_TENSOR_TYPES))
    for name in sorted(adapter.tensors):
        if not name.endswith((LORA_A, LORA_B)):
            continue
        t = adapter.tensor_types.get(name)
        if t not in LORA_TENSOR_TYPES:
            out.append(AbiProblem("tensor-type", f"tensor {name} has type {t}, which llama.cpp cannot apply as LoRA (allowed: {allowed})", name))
    return out


def adapter_problems(adapter: GGUFHeader) -> list[AbiProblem]:
    """What is wrong with an adapter file on its own, whatever the base: kind, tensor names, pairs, types, shapes."""
    out: list[AbiProblem] = []
    if adapter.general_type != "adapter":
        out.append(AbiProblem("not-adapter", f"general.type is {adapter.general_type!r}, expected 'adapter' (not a LoRA adapter file)"))
    if adapter.adapter_type != "lora":
        out.append(AbiProblem("not-lora", f"adapter.type is {adapter.adapter_type!r}, expected 'lora'"))
    pairs, unexpected = _pairs(adapter)
    for name in sorted(unexpected):
        out.append(AbiProblem("unexpected-tensor", f"tensor {name} is neither .lora_a nor .lora_b", name))
    if not pairs:
        out.append(AbiProblem("no-tensors", "the adapter holds no .lora_a/.lora_b tensors"))
    for target in sorted(pairs):
        p = pairs[target]
        if "a" not in p or "b" not in p:
            missing = LORA_A if "a" not in p else LORA_B
            out.append(AbiProblem("incomplete-pair", f"{target}{missing} is missing (incomplete LoRA pair)", target))
        elif len(p["a"]) != 2 or len(p["b"]) != 2:
            out.append(AbiProblem("shape-mismatch", f"{target}: lora_a {list(p['a'])} and lora_b {list(p['b'])} are not matrices", target))
    return out + type_problems(adapter)


def validate_adapter_file(path: Path, *, label: str | None = None) -> GGUFHeader:
    """Read an adapter's header and refuse it (``InvalidPackageError``, exit 5) unless llama.cpp can load and run it.

    Used at install, before the adapter is ever recorded as installed.
    """
    hdr = read_header(path, with_vocab=False)
    problems = adapter_problems(hdr)
    if problems:
        who = label or path.name
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise InvalidPackageError(
            f"adapter {who} is not a usable LoRA adapter: {problems[0].message}{more}",
            "rebuild the adapter (llmos train, or llama.cpp's convert_lora_to_gguf.py with --outtype f16/bf16/q8_0)",
            details={"problems": [p.to_json() for p in problems]},
        )
    return hdr


def validate_staged(manifest: Manifest, locate: Callable[[str], Path | None], *, label: str) -> None:
    """Install-time GGUF checks of a staged package: a model file must be a readable base model, an adapter a usable LoRA.

    ``locate(rel)`` returns the staged (store) path of payload file ``rel``.
    Raises ``InvalidPackageError`` (exit 5).
    """
    if manifest.model is not None:
        rel = manifest.model.file
        p = locate(rel) if rel else None
        if p is not None:
            try:
                hdr = read_header(p, with_vocab=False)
            except InvalidPackageError as exc:
                raise InvalidPackageError(f"{label}: model file {rel}: {exc.message.removeprefix(f'{p}: ')}", exc.hint) from None
            if hdr.is_adapter:
                raise InvalidPackageError(f"{label}: model file {rel} is a LoRA adapter, not a base model")
        return
    rel = manifest.adapter.file if manifest.adapter is not None else None
    p = locate(rel) if rel else None
    if p is None:
        return
    try:
        validate_adapter_file(p, label=f"{label} ({rel})")
    except InvalidPackageError as exc:
        if exc.message.startswith(f"{p}: "):
            raise InvalidPackageError(f"{label}: adapter file {rel}: {exc.message.removeprefix(f'{p}: ')}", exc.hint) from None
        raise


def check_adapter(adapter: GGUFHeader, base: GGUFHeader) -> list[AbiProblem]:
    """Every reason llama.cpp would refuse (or crash on) ``adapter`` with ``base``."""
    out: list[AbiProblem] = []
    if adapter.general_type != "adapter":
        out.append(AbiProblem("not-adapter", f"general.type is {adapter.general_type!r}, expected 'adapter' (not a LoRA adapter file)"))
    if adapter.adapter_type != "lora":
        out.append(AbiProblem("not-lora", f"adapter.type is {adapter.adapter_type!r}, expected 'lora'"))
    if adapter.architecture != base.architecture:
        out.append(
            AbiProblem(
                "arch-mismatch",
                f"adapter is for architecture {adapter.architecture!r} but the model is {base.architecture!r}",
            )
        )
        return out  # tensor names mean nothing across architectures
    pairs, unexpected = _pairs(adapter)
    for name in sorted(unexpected):
        out.append(AbiProblem("unexpected-tensor", f"tensor {name} is neither .lora_a nor .lora_b", name))
    for target in sorted(pairs):
        p = pairs[target]
        if "a" not in p or "b" not in p:
            missing = LORA_A if "a" not in p else LORA_B
            out.append(AbiProblem("incomplete-pair", f"{target}{missing} is missing (incomplete LoRA pair)", target))
            continue
        w = base.tensors.get(target)
        if w is None:
            out.append(AbiProblem("unknown-tensor", f"adapts {target}, which the model does not have", target))
            continue
        a, b = p["a"], p["b"]
        if len(a) != 2 or len(b) != 2 or len(w) < 2:
            out.append(AbiProblem("shape-mismatch", f"{target}: lora_a {list(a)}, lora_b {list(b)} do not fit model tensor {list(w)}", target))
            continue
        if target.endswith("token_embd.weight"):
            fits = b[1] == w[0] and a[1] == w[1]
        else:
            fits = a[0] == w[0] and b[1] == w[1]
        if not fits:
            out.append(
                AbiProblem(
                    "shape-mismatch",
                    f"{target}: lora_a {list(a)} x lora_b {list(b)} does not fit model tensor {list(w)} (built for another base?)",
                    target,
                )
            )
        elif not target.endswith("token_embd.weight") and a[1] != b[0]:
            out.append(AbiProblem("rank-mismatch", f"{target}: lora_a rank {a[1]} differs from lora_b rank {b[0]}", target))
    return out + type_problems(adapter)


def ensure_adapter_fits(adapter: GGUFHeader, base: GGUFHeader, *, label: str | None = None, model_label: str | None = None) -> None:
    """Raise ``AbiError`` (exit code 11) when ``check_adapter`` finds anything."""
    problems = check_adapter(adapter, base)
    if not problems:
        return
    who = label or adapter.path.name
    model = model_label or base.path.name
    more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
    raise AbiError(
        f"adapter {who} does not fit model {model}: {problems[0].message}{more}",
        "use a library built for this model, pick its base with --model, or leave it out with --no-libs / `llmos detach`",
        details={"problems": [p.to_json() for p in problems]},
    )
