"""kill -9 at any instant leaves the old or the new installed set, never a half one.

Real ``python -m llmos_cli install/upgrade/remove/autoremove`` subprocesses
are killed, first deterministically at every named step of a transaction
(``LLMOS_TEST_CRASH_AT``), then with SIGKILL after random delays while
``LLMOS_TEST_STEP_DELAY`` stretches the transaction so that the kills land
everywhere.  After each kill the next command must recover on its own, and
the state must be whole: SQLite integrity, installed set == before or after,
every file row's blob present with the right hash, nothing pending, staging
empty, and a recovery message whenever a transaction was left pending.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from llmos_cli.state.transaction import STEPS
from tests.helpers.installtools import build_registry, check_consistent, installed_set, pending_transactions, use_registry

S0: dict[str, str] = {}
S1 = {"kk-base": "1.0.0", "kk-dep": "1.0.0", "kk-lib": "1.0.0"}
S2 = {"kk-base": "1.0.0", "kk-dep": "2.0.0", "kk-lib": "2.0.0"}
S3 = {"kk-base": "1.0.0", "kk-dep": "2.0.0"}

#: state -> (command that moves it on, the state after)
CYCLE = [
    (S0, ("install", "kk-lib<2", "-y"), S1),
    (S1, ("upgrade", "-y"), S2),
    (S2, ("remove", "kk-lib", "-y"), S3),
    (S3, ("autoremove", "-y"), S0),
]


def next_move(current: dict[str, str]):
    for before, args, after in CYCLE:
        if before == current:
            return before, args, after
    raise AssertionError(f"installed set is none of the known states: {current}")


def shared_docs(prefix: str, n: int) -> dict[str, str]:
    return {f"docs/{prefix}{i:02d}.md": f"# {prefix} {i}\n\n" + f"{prefix} line {i}\n" * 40 for i in range(n)}


@pytest.fixture
def kill_reg(tmp_path, cli):
    common = shared_docs("common", 6)
    reg = build_registry(
        tmp_path,
        [
            dict(name="kk-base", kind="model"),
            dict(name="kk-dep", files={**common, **shared_docs("dep1-", 12)}),
            dict(name="kk-lib", depends=["kk-dep<2"], base="kk-base", files={**common, **shared_docs("lib1-", 20)}),
            dict(name="kk-dep", version="2.0.0", files={**common, **shared_docs("dep2-", 12)}),
            dict(name="kk-lib", version="2.0.0", depends=["kk-dep>=2"], base="kk-base", files={**common, **shared_docs("lib2-", 20)}),
        ],
    )
    use_registry(cli, reg)
    return reg


def spawn(args, env_extra: dict[str, str]) -> subprocess.Popen:
    env = dict(os.environ, **env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "llmos_cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def recover_and_check(cli, home, before, after, context: str) -> dict[str, str]:
    """Run the next command; check the recovery notice and that the state is whole."""
    pending = pending_transactions(home)
    r = cli("list", "--json")
    assert r.exit_code == 0, (context, r)
    warnings = r.json()["warnings"]
    for txid in pending:
        assert any(f"(transaction {txid}): rolled back" in w and w.startswith("recovered from an interrupted `llmos ") for w in warnings), (context, warnings)
    if not pending:
        assert not any("recovered" in w for w in warnings), (context, warnings)
    state = check_consistent(home)
    assert state in (before, after), (context, state)
    return state


@pytest.mark.slow
def test_crash_at_every_step(kill_reg, cli, llmos_home):
    """Deterministic: os._exit(137) at each named step of install, upgrade and remove."""
    always = {"locked", "journal", "fetched", "staged", "db-written", "committed", "done"}
    current: dict[str, str] = {}
    covered: set[tuple[str, str]] = set()
    for op in ("install", "upgrade", "remove"):
        for step in STEPS:
            # walk the cycle to the state where `op` is the next move
            while True:
                before, args, after = next_move(current)
                if args[0] == op:
                    break
                r = cli(*args)
                assert r.exit_code == 0, r
                current = check_consistent(llmos_home)
            p = spawn(args, {"LLMOS_TEST_CRASH_AT": step})
            _out, err = p.communicate(timeout=120)
            ctx = f"{op} crashed at {step}: rc={p.returncode} stderr={err[-800:]}"
            assert p.returncode in (0, 137), ctx
            if step in always:
                assert p.returncode == 137, ctx
            if p.returncode == 137:
                covered.add((op, step))
            current = recover_and_check(cli, llmos_home, before, after, ctx)
            # before the commit: the old set; from the commit on: the new one
            if p.returncode == 137:
                expected = after if STEPS.index(step) >= STEPS.index("committed") else before
                assert current == expected, ctx
    assert ("install", "staging") in covered and ("upgrade", "gc") in covered and ("remove", "gc") in covered


@pytest.mark.slow
def test_random_sigkill(kill_reg, cli, llmos_home):
    """Random: SIGKILL after a random delay, many times, walking the install/upgrade/remove/autoremove cycle."""
    seed = int(os.environ.get("LLMOS_KILL_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    iterations = int(os.environ.get("LLMOS_KILL_ITERATIONS", "40"))
    current: dict[str, str] = {}
    outcomes = {"old": 0, "new": 0}
    recovered = 0
    typical: float | None = None
    for i in range(iterations):
        before, args, after = next_move(current)
        t0 = time.monotonic()
        p = spawn(args, {"LLMOS_TEST_STEP_DELAY": "0.004"})
        if typical is None or i % 8 == 0:
            # every 8th run completes: it keeps the cycle moving and times a whole run on this (busy) machine
            p.wait(timeout=120)
            took = time.monotonic() - t0
            typical = took if typical is None else 0.5 * typical + 0.5 * took
        else:
            time.sleep(rng.uniform(0.1, 1.1) * typical)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        _out, err = p.communicate(timeout=120)
        ctx = f"seed={seed} iteration={i} {' '.join(args)} rc={p.returncode} stderr={err[-800:]}"
        assert p.returncode in (0, -signal.SIGKILL), ctx
        recovered += bool(pending_transactions(llmos_home))
        if rng.random() < 0.25 and i < iterations - 1:
            # leave the mess to the next (killed) process: kills then also land inside its recovery
            current = installed_set(llmos_home)
            assert current in (before, after), ctx
        else:
            current = recover_and_check(cli, llmos_home, before, after, ctx)
        outcomes["new" if current == after else "old"] += 1
    print(f"seed={seed} outcomes={outcomes} recovered={recovered}")
    # the kills really landed inside transactions, and some runs got through
    assert recovered > 0 and outcomes["new"] > 0, (seed, outcomes, recovered)
