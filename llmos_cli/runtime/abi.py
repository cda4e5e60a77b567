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

from dataclasses import dataclass

from llmos_cli.errors import AbiError
from llmos_cli.gguf_info import GGUFHeader

LORA_A = ".lora_a"
LORA_B = ".lora_b"


@dataclass(frozen=True)
class AbiProblem:
    code: str  # not-adapter | not-lora | arch-mismatch | unexpected-tensor | incomplete-pair | unknown-tensor | shape-mismatch | rank-mismatch
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
    return out


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
