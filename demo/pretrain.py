"""Train the demo's base chat model from scratch on the CPU (a few minutes).

1. a SentencePiece BPE tokenizer (byte fallback) on rendered demo conversations
   and the libraries' documents, with ChatML control tokens and the Hermes
   tool tags;
2. a tiny Llama (``MODEL``) trained on ``corpus.base_example`` conversations,
   tokenized by llama.cpp from a vocabulary-only GGUF (the very tokens
   inference will see); loss on answers, plus a small weight on the prompt so
   the model also learns to read;
3. saved as a Hugging Face checkpoint and converted by ``llmos_cli.train.convert``
   into ``demo-chat.gguf`` (f16, chat template inside).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import corpus
import world

MODEL = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
VOCAB_SIZE = 1200
PROMPT_WEIGHT = 0.25


def tokenizer_texts(libs: dict[str, world.Library], rng: random.Random, chunk_size: int, n: int = 4000) -> list[str]:
    from llmos_cli.train.data import render_template
    from llmos_cli.train.scratch import CHATML_TOOLS_TEMPLATE

    names = world.NameMaker(rng.randint(0, 10**9))
    texts = []
    for _ in range(n):
        msgs, tools = corpus.base_example(rng, names, chunk_size)
        texts.append(render_template(CHATML_TOOLS_TEMPLATE, msgs, tools=tools, add_generation_prompt=False))
    for lib in libs.values():
        texts += list(world.documents(lib).values())
        for f in lib.facts:
            texts += f.train_questions() + [f.heldout_question(), f.answer]
    return texts


def _lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def _train_phase(
    model: Any,
    optim: Any,
    pool: list[tuple[list[int], list[float]]],
    steps: int,
    batch_size: int,
    lr: float,
    brng: random.Random,
    t0: float,
    log: Callable[[str], None],
) -> None:
    import torch

    order: list[int] = []
    queue: list[list[int]] = []
    ema = None
    warmup = max(10, steps // 20)
    for step in range(steps):
        if not queue:
            # groups of examples of similar length: little padding
            if len(order) < batch_size * 8:
                order = list(range(len(pool)))
                brng.shuffle(order)
            group, order = order[: batch_size * 8], order[batch_size * 8 :]
            group.sort(key=lambda i: len(pool[i][0]))
            queue = [group[k : k + batch_size] for k in range(0, len(group), batch_size)]
            brng.shuffle(queue)
        idx = queue.pop()
        n = max(len(pool[i][0]) for i in idx)
        x = torch.zeros((len(idx), n), dtype=torch.long)
        wts = torch.zeros((len(idx), n))
        mask = torch.zeros((len(idx), n), dtype=torch.long)
        for r, i in enumerate(idx):
            ids, w = pool[i]
            x[r, : len(ids)] = torch.tensor(ids)
            wts[r, : len(w)] = torch.tensor(w)
            mask[r, : len(ids)] = 1
        for g in optim.param_groups:
            g["lr"] = _lr(step, steps, lr, warmup)
        logits = model(input_ids=x, attention_mask=mask).logits[:, :-1]
        target = x[:, 1:]
        wt = wts[:, 1:].reshape(-1)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
        loss = (ce * wt).sum() / wt.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        ans = wt == 1.0
        ans_loss = float(ce.detach()[ans].mean()) if ans.any() else 0.0
        ema = ans_loss if ema is None else 0.95 * ema + 0.05 * ans_loss
        if step % 100 == 0 or step == steps - 1:
            log(f"  step {step:5d}/{steps}  answer loss {ema:.3f}  lr {_lr(step, steps, lr, warmup):.2e}  ({time.monotonic() - t0:.0f}s)")


def build_base(
    work: Path,
    libs: dict[str, world.Library],
    *,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    chunk_size: int,
    pool_size: int,
    copy_steps: int = 2000,
    copy_batch: int = 32,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """Train the base model; return (HF checkpoint folder, GGUF path).

    Two phases: ``copy_steps`` of short copy-and-recall conversations (the model
    learns to copy from its prompt -- the "induction" skill that reading and
    tool arguments need -- which takes a while to appear in a model this
    small), then ``steps`` on the full mixture.
    """
    import torch

    from llmos_cli.train import scratch
    from llmos_cli.train.convert import convert_hf_to_gguf
    from llmos_cli.train.data import IGNORE, GGUFTokenizer, encode_chat

    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    tok_model = scratch.train_tokenizer(
        tokenizer_texts(libs, random.Random(seed + 1), chunk_size),
        work / "tokenizer.model",
        vocab_size=VOCAB_SIZE,
        control_symbols=scratch.CHAT_CONTROL_TOKENS,
        user_symbols=scratch.CHAT_USER_TOKENS,
    )
    from llmos_cli.train.convert import read_spm_pieces

    n_vocab = len(read_spm_pieces(tok_model))
    config = scratch.llama_config(vocab_size=n_vocab, **MODEL)
    model = scratch.new_llama(config, seed=seed)
    hf_dir = work / "demo-chat-hf"
    save = lambda: scratch.save_hf_checkpoint(  # noqa: E731
        model, hf_dir, tokenizer_model=tok_model, chat_template=scratch.CHATML_TOOLS_TEMPLATE, eos_token="<|im_end|>"
    )
    save()
    vocab_gguf = convert_hf_to_gguf(hf_dir, work / "vocab.gguf", vocab_only=True)
    tok = GGUFTokenizer(vocab_gguf)
    log(f"tokenizer: {n_vocab} pieces ({time.monotonic() - t0:.0f}s)")

    def encode(msgs: list[dict[str, Any]], tools: Any) -> tuple[list[int], list[float]]:
        enc = encode_chat(tok, msgs, tools)
        return enc.input_ids, [1.0 if lab != IGNORE else PROMPT_WEIGHT for lab in enc.labels]

    names = world.NameMaker(seed + 2)
    copy_pool = []
    for _ in range(max(1, copy_steps) * 4 if copy_steps else 0):
        msgs = corpus.copy_example(rng, names) if rng.random() < 0.7 else corpus.fact_example(rng)
        copy_pool.append(encode(msgs, None))
    pool = [encode(*corpus.base_example(rng, names, chunk_size)) for _ in range(pool_size)]
    lengths = sorted(len(p[0]) for p in pool)
    log(f"pool: {len(pool)} conversations, median {lengths[len(lengths) // 2]} tokens, max {lengths[-1]} ({time.monotonic() - t0:.0f}s)")

    params = sum(p.numel() for p in model.parameters())
    log(f"model: {params / 1e6:.2f}M parameters, {MODEL['num_hidden_layers']} layers, width {MODEL['hidden_size']}")
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    torch.manual_seed(seed)
    brng = random.Random(seed + 3)
    for phase, (data, n_steps, bs) in enumerate(((copy_pool, copy_steps, copy_batch), (pool, steps, batch_size))):
        if not n_steps:
            continue
        log(f"phase {phase + 1}: {n_steps} steps of {bs} ({'copying and recall' if phase == 0 else 'full mixture'})")
        _train_phase(model, optim, data, n_steps, bs, lr, brng, t0, log)
    model.eval()
    save()
    gguf = convert_hf_to_gguf(hf_dir, work / "demo-chat.gguf", dtype="f16", name="demo-chat")
    log(f"base model written: {gguf} ({gguf.stat().st_size / 1e6:.1f} MB, {time.monotonic() - t0:.0f}s)")
    return hf_dir, gguf
