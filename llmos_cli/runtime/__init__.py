"""The llama.cpp runtime: base models as packages, adapter ABI checks, stacking, ``llmos run``.

Modules (none imports llama_cpp at import time; ``engine.import_llama()`` does, lazily):

* ``abi``     -- ``check_adapter(adapter_header, base_header) -> [AbiProblem]``, ``ensure_adapter_fits``.
* ``engine``  -- the ``Engine`` interface and ``LlamaCppEngine`` (multi-LoRA, streaming, grammars).
* ``chat``    -- rendering a model's own Jinja chat template.
* ``models``  -- installed models, the default model, ``import_model``.
* ``stack``   -- what a run uses (model + libraries + scales), ``attach``/``detach``.
* ``run``     -- the ``llmos run`` pipeline: request -> messages -> stages -> generation -> RunResult.
* ``doctor``  -- build, device, threads, data directories, database health.
"""
