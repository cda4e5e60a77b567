"""Sealed test harness shared by every test module.

* Each test gets its own ``LLMOS_HOME`` under ``tmp_path`` (autouse), with
  ``NO_COLOR`` and a fixed ``COLUMNS``.
* ``cli`` runs llmos in-process and returns exit code, stdout and stderr
  separately; ``llmos_proc`` runs it as a real subprocess.
* ``write_source`` writes a package source folder (a real ``llmos.toml``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def llmos_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "llmos-home"
    monkeypatch.setenv("LLMOS_HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("LLMOS_LOCK_TIMEOUT", "5")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LLMOS_DEBUG", raising=False)
    # The demo packages of the embedded registry would mix with each test's own
    # registries; tests that want them (tests/test_demo.py) point this back.
    empty = tmp_path / "embedded-registry"
    empty.mkdir()
    monkeypatch.setenv("LLMOS_EMBEDDED_REGISTRY", str(empty))
    return home


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self) -> str:  # readable assertion failures
        return f"CliResult(exit_code={self.exit_code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


@pytest.fixture
def cli():
    """Run llmos in-process: ``cli("install", "x", "-y")``."""
    from typer.testing import CliRunner

    from llmos_cli.cli import build_app

    def run(*args: str, input: str | None = None) -> CliResult:
        runner = CliRunner()
        res = runner.invoke(build_app(), [str(a) for a in args], input=input, catch_exceptions=False)
        return CliResult(res.exit_code, res.stdout, res.stderr)

    return run


@pytest.fixture
def llmos_proc():
    """Run llmos as a real subprocess (for crash/kill/pipe behaviour)."""

    def run(*args: str, input: str | None = None, timeout: float = 300, env: dict | None = None) -> CliResult:
        e = dict(os.environ)
        if env:
            e.update(env)
        p = subprocess.run(
            [sys.executable, "-m", "llmos_cli", *[str(a) for a in args]],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=e,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        return CliResult(p.returncode, p.stdout, p.stderr)

    return run


@pytest.fixture
def write_source():
    from tests.helpers.pkgtools import write_source as _ws

    return _ws
