"""Stacked LoRA adapters: switch cost against a model load, and decode speed with 0, 1, 2, 4 adapters.

Model: the generated ~100M-parameter Llama of ``bench/run_overhead.py`` (f16,
cached under $LLMOS_TEST_CACHE/bench).  Adapters: rank 16 on every linear
weight of every layer (q, k, v, o, gate, up, down), f32, like a PEFT LoRA
converted by llama.cpp.  All through ``LlamaCppEngine`` (the code
``llmos run`` uses), llama.cpp's default threads, CPU only.

Measured:

* model load (``LlamaCppEngine(...)``: GGUF header check + ``Llama(...)``);
* first load of an adapter (``llama_adapter_lora_init``, ABI check included);
* switching the active set between already-loaded adapters
  (``llama_set_adapters_lora`` + dropping the cached prefix) -- what
  ``attach``/``detach`` between runs of a long-lived engine costs instead of
  a model reload;
* greedy decode tokens/s with 0, 1, 2 and 4 stacked adapters.  Unmerged
  adapters cost extra matmuls per token; this is the figure a merged model
  (the later integrator) must beat.

    python bench/adapters.py [--tokens 64] [--reps 3] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # the tests.helpers package
from _report import table, write_section  # noqa: E402
from run_overhead import bench_models, cache_dir  # noqa: E402

PROMPT = [{"role": "user", "content": "Tell me about the libraries."}]


def adapters_for(model_path: Path, n: int) -> list[Path]:
    from tests.helpers.fixtures_models import model_stub, write_lora

    base = model_stub(model_path)
    out = []
    for i in range(n):
        p = cache_dir() / f"m100-lora{i}.gguf"
        if not p.exists():
            print(f"generating {p} ...", file=sys.stderr)
            write_lora(p, base, targets=base.LINEAR, rank=16, alpha=32.0, seed=100 + i, magnitude=0.05)
        out.append(p)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine, SamplingParams

    model = bench_models()["m100"]["path"]
    loras = adapters_for(model, 4)
    opts = EngineOptions(n_ctx=512)

    loads = []
    for _ in range(args.reps):
        t = time.perf_counter()
        e = LlamaCppEngine(model, opts)
        loads.append(time.perf_counter() - t)
        e.close()

    e = LlamaCppEngine(model, opts)
    threads = e.n_threads
    first_loads = []
    for p in loras:
        t = time.perf_counter()
        e.set_adapters([(p, 1.0)])
        first_loads.append(time.perf_counter() - t)
    e.set_adapters([])
    sets = [[], [loras[0]], [loras[0], loras[1]], loras]
    switches = []
    for _ in range(args.reps):
        for s in sets[1:] + [[]]:
            t = time.perf_counter()
            e.set_adapters([(p, 1.0) for p in s])
            switches.append(time.perf_counter() - t)

    prompt = e.prompt_tokens(PROMPT)
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0)
    speed: dict[int, float] = {}
    for s in sets:
        e.set_adapters([(p, 0.5) for p in s])
        e.generate(prompt, SamplingParams(max_tokens=4, temperature=0.0))  # warm-up
        rates = []
        for _ in range(args.reps):
            e.llm.reset()
            g = e.generate(prompt, params)
            if g.completion_tokens > 1 and g.generate_s > 0:
                rates.append((g.completion_tokens - 1) / g.generate_s)
        speed[len(s)] = statistics.median(rates)
    e.close()

    med_load = statistics.median(loads)
    med_switch = statistics.median(switches)
    rows = [
        ["model load (100M, f16)", f"{med_load * 1000:.1f} ms", "1x"],
        [
            "first load of one adapter (rank 16, 84 matrices)",
            f"{statistics.median(first_loads) * 1000:.1f} ms",
            f"{statistics.median(first_loads) / med_load:.3f}x",
        ],
        ["switch between loaded adapter sets", f"{med_switch * 1000:.3f} ms", f"{med_switch / med_load:.5f}x"],
    ]
    base_rate = speed[0]
    speed_rows = [[n, f"{speed[n]:.1f}", f"{speed[n] / base_rate:.2f}x"] for n in sorted(speed)]
    body = (
        f"Generated ~100M-parameter Llama (f16), adapters of rank 16 on all 7 linear weights of all 12 layers, "
        f"llama.cpp threads: {threads}, CPU only (no GPU is available in this task); medians of {args.reps} repetitions.\n\n"
        + table(["operation", "time", "vs model load"], rows)
        + f"\nGreedy decode speed, {args.tokens} tokens, adapters at scale 0.5 (unmerged: extra matmuls per token):\n\n"
        + table(["stacked adapters", "tokens/s", "vs bare base"], speed_rows)
    )
    if args.no_write:
        print(body)
    else:
        write_section("adapters", "Adapter switching and stacked-adapter decode speed", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
