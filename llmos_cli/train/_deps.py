"""The optional ``train`` extra: torch, transformers, peft, sentencepiece, safetensors.

Everything under ``llmos_cli.train`` that needs them calls ``require_train_extra``
first, so a user without the extra gets one clear line naming it instead of an
ImportError traceback.
"""

from __future__ import annotations

from llmos_cli.errors import ExitCode, LlmosError

TRAIN_MODULES = ("torch", "transformers", "peft", "safetensors", "sentencepiece")
INSTALL_HINT = "pip install torch==2.13.0 && pip install 'llmos[train]'  (pin torch: unpinned it pulls GBs of CUDA packages)"


class MissingExtra(LlmosError):
    """An optional dependency group is not installed."""

    exit_code = ExitCode.FAILURE
    slug = "missing_extra"


def require_train_extra(feature: str, modules: tuple[str, ...] = TRAIN_MODULES) -> None:
    import importlib.util

    missing: list[str] = []
    for mod in modules:
        if missing and mod in ("transformers", "peft"):
            # without torch these only print noise on import; presence is enough to know
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(mod)
            continue
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    if not missing:
        import warnings

        # deprecation chatter of transformers/peft internals is not the user's business
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)(\.|$)")
    if missing:
        raise MissingExtra(
            f"{feature} needs the optional 'train' extra (missing: {', '.join(missing)})",
            INSTALL_HINT,
            details={"missing": missing, "extra": "train"},
        )


def set_threads(threads: int | None) -> None:
    """Bound torch's CPU threads (the default grabs every core)."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
