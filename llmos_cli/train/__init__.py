"""Training knowledge libraries (optional ``train`` extra).

* ``convert``  -- Hugging Face Llama checkpoint <-> GGUF base model
* ``export``   -- PEFT LoRA <-> GGUF LoRA adapter (llama.cpp's layout)
* ``scratch``  -- tokenizer + tiny Llama checkpoints from scratch (demo, tests)
* ``data``     -- a library's training set: Q&A with paraphrases, documents, replay
* ``lora``     -- ``train_library``: fine-tune a LoRA with transformers + peft
* ``merge``    -- the integrator: several libraries -> one (peft add_weighted_adapter)
* ``route``    -- per-prompt relevance scores of attached libraries

Nothing here is imported by ``llmos_cli.cli`` at start-up; torch and friends are
imported inside functions after ``_deps.require_train_extra``.
"""
