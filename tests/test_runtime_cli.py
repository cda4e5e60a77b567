"""The runtime commands end to end: import-model, default-model, stack, attach/detach, run, doctor.

Every bad input of ``llmos run`` is run in a real subprocess: it must end with
a clear message and its named exit code, never a crash of the interpreter.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from llmos_cli.errors import ExitCode
from tests.helpers.fixtures_models import write_lora, write_tiny_llama

RUN_KEYS = {"text", "finish_reason", "model", "libraries", "usage", "timings", "device", "seed", "sampling", "extra"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt-models")
    base = write_tiny_llama(d / "tiny.gguf")
    other = write_tiny_llama(d / "other.gguf", n_embd=48, n_ff=96, seed=9, name="other")
    return {
        "base": base,
        "other": other,
        "lora": write_lora(d / "lora.gguf", base, seed=11),
        "lora_other": write_lora(d / "lora-other.gguf", other, seed=12),
        "dir": d,
    }


def _library(cli, tmp_path: Path, write_source, name: str, base: str, adapter: Path, scale: float | None = None) -> None:
    extra: dict = {"adapter": {"file": "adapter.gguf"}}
    if scale is not None:
        extra["adapter"]["scale"] = scale
    folder = write_source(tmp_path / "src", name, "1.0", "library", base=base, files={"adapter.gguf": adapter.read_bytes()}, extra=extra)
    r = cli("build", folder, "-o", tmp_path / "out")
    assert r.exit_code == 0, r
    r = cli("install", tmp_path / "out" / f"{name}_1.0.llmos", "-y")
    assert r.exit_code == 0, r


@pytest.fixture
def installed(cli, models):
    r = cli("import-model", models["base"].path, "--name", "tiny", "--version", "1.0", "-y")
    assert r.exit_code == 0, r
    return models


def test_import_model_installs_and_becomes_default(cli, installed, llmos_home):
    from llmos_cli.gguf_info import read_header

    r = cli("default-model", "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["default_model"] == "tiny"
    r = cli("stack", "--json")
    data = r.json()["data"]
    assert data["model"]["name"] == "tiny" and data["model"]["version"] == "1.0"
    assert data["model"]["fingerprint"] == read_header(installed["base"].path).fingerprint()
    assert data["model"]["architecture"] == "llama" and data["model"]["context_length"] == 256
    assert data["libraries"] == []
    assert (llmos_home / "local-registry" / "tiny_1.0.llmos").is_file()
    r = cli("list", "--kind", "model", "--json")
    assert [p["name"] for p in r.json()["data"]["packages"]] == ["tiny"]


def test_import_model_simulate_and_refusals(cli, models, llmos_home, tmp_path):
    r = cli("import-model", models["base"].path, "--name", "tiny", "-s", "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["simulated"] is True
    assert not (llmos_home / "local-registry").exists()
    r = cli("import-model", models["lora"].path, "--name", "x")
    assert r.exit_code == ExitCode.INVALID_PACKAGE and "LoRA adapter, not a model" in r.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + os.urandom(200))
    r = cli("import-model", junk, "--name", "junk")
    assert r.exit_code == ExitCode.INVALID_PACKAGE and "GGUF" in r.stderr
    r = cli("import-model", models["base"].path, "--name", "Bad Name")
    assert r.exit_code == ExitCode.USAGE
    assert cli("import-model", models["base"].path, "--name", "tiny", "-y").exit_code == 0
    # the same name and version with other bytes is refused, the same file again is fine
    r = cli("import-model", models["other"].path, "--name", "tiny", "-y")
    assert r.exit_code == ExitCode.USAGE and "already in the local registry" in r.stderr
    assert cli("import-model", models["base"].path, "--name", "tiny", "-y").exit_code == 0


def test_run_streams_clean_reproducible_text(installed, llmos_proc):
    a = llmos_proc("run", "hello world", "--temperature", "0", "--seed", "7", "-n", "16")
    assert a.exit_code == 0, a
    assert a.stdout.endswith("\n") and len(a.stdout) > 1
    b = llmos_proc("run", "hello world", "--temperature", "0", "--seed", "7", "-n", "16")
    assert b.stdout == a.stdout
    for noise in ("llama_", "ggml_", "load_tensors", "llm_load", "system_info"):
        assert noise not in a.stdout and noise not in a.stderr
    c = llmos_proc("run", "hello world", "--temperature", "1.2", "--seed", "7", "-n", "16")
    d = llmos_proc("run", "hello world", "--temperature", "1.2", "--seed", "7", "-n", "16")
    assert c.exit_code == 0 and c.stdout == d.stdout


def test_run_json_contract(installed, llmos_proc):
    r = llmos_proc("run", "hello", "--json", "-n", "5", "--temperature", "0", "--seed", "1")
    assert r.exit_code == 0, r
    env = json.loads(r.stdout)
    assert env["schema"] == "llmos/v1" and env["command"] == "run" and env["ok"] is True
    data = env["data"]
    assert set(data) == RUN_KEYS
    assert set(data["model"]) == {"name", "version", "fingerprint"}
    assert data["model"]["name"] == "tiny" and data["model"]["fingerprint"].startswith("sha256:")
    assert set(data["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert 1 <= data["usage"]["completion_tokens"] <= 5
    assert set(data["timings"]) == {"load_s", "adapters_s", "prompt_s", "generate_s", "total_s"}
    assert all(v >= 0 for v in data["timings"].values())
    assert set(data["device"]) == {"device", "n_gpu_layers", "n_ctx", "threads"}
    assert data["device"]["device"] == "cpu"
    assert data["finish_reason"] in ("stop", "length") and data["seed"] == 1
    assert isinstance(data["text"], str)


def test_piped_stdin_goes_before_the_prompt(installed, llmos_proc):
    from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine

    r = llmos_proc("run", "summarise", "--json", "-n", "1", "--temperature", "0", input="the notes\nare here\n")
    assert r.exit_code == 0, r
    with LlamaCppEngine(installed["base"].path, EngineOptions(n_ctx=256)) as e:
        want = len(e.prompt_tokens([{"role": "user", "content": "the notes\nare here\n\nsummarise"}]))
    assert json.loads(r.stdout)["data"]["usage"]["prompt_tokens"] == want
    only_stdin = llmos_proc("run", "--json", "-n", "1", input="just stdin")
    assert only_stdin.exit_code == 0, only_stdin


def test_libraries_attach_detach_and_scales(cli, installed, llmos_proc, tmp_path, write_source):
    _library(cli, tmp_path, write_source, "med-lib", "tiny>=1.0", installed["lora"].path, scale=0.5)
    r = cli("stack", "--json")
    libs = r.json()["data"]["libraries"]
    assert [(x["name"], x["scale"], x["fits"], x["attached"]) for x in libs] == [("med-lib", 0.5, True, True)]
    r = llmos_proc("run", "hello", "--json", "-n", "3", "--temperature", "0")
    assert r.exit_code == 0, r
    assert json.loads(r.stdout)["data"]["libraries"] == [{"name": "med-lib", "version": "1.0", "scale": 0.5, "adapter": True}]
    with_lib = json.loads(llmos_proc("run", "hello world", "--json", "-n", "12", "--temperature", "0").stdout)["data"]["text"]
    bare = json.loads(llmos_proc("run", "hello world", "--json", "-n", "12", "--temperature", "0", "--no-libs").stdout)["data"]
    assert bare["libraries"] == [] and bare["text"] != with_lib

    # detach: installed but out of runs (simulate first: nothing changes)
    assert cli("detach", "med-lib", "-s").exit_code == 0
    assert cli("stack", "--json").json()["data"]["libraries"][0]["name"] == "med-lib"
    r = cli("detach", "med-lib", "--json")
    assert r.exit_code == 0 and r.json()["data"]["changed"][0]["attached"] is False
    data = cli("stack", "--json").json()["data"]
    assert data["libraries"] == [] and data["left_out"][0]["name"] == "med-lib"
    r = llmos_proc("run", "hello world", "--json", "-n", "12", "--temperature", "0")
    assert json.loads(r.stdout)["data"]["text"] == bare["text"]
    # --lib overrides the attached set and sets the scale
    r = llmos_proc("run", "hello", "--json", "-n", "2", "--lib", "med-lib:0.25")
    assert json.loads(r.stdout)["data"]["libraries"][0]["scale"] == 0.25
    # attach with a new scale
    assert cli("attach", "med-lib", "--scale", "0.3").exit_code == 0
    libs = cli("stack", "--json").json()["data"]["libraries"]
    assert libs[0]["scale"] == 0.3 and libs[0]["attached"] is True
    hist = cli("history", "--json").json()["data"]["transactions"]
    assert [h["command"] for h in hist[:2]] == ["attach", "detach"]


def test_attach_detach_bad_input(cli, installed):
    r = cli("detach", "nope")
    assert r.exit_code == ExitCode.NOT_FOUND and "not installed" in r.stderr
    r = cli("attach", "tiny")
    assert r.exit_code == ExitCode.USAGE and "not a library" in r.stderr
    r = cli("attach", "nope", "--scale", "nan")
    assert r.exit_code in (ExitCode.USAGE, ExitCode.NOT_FOUND)


def test_default_model_choice(cli, installed, llmos_proc):
    assert cli("import-model", installed["other"].path, "--name", "other", "-y").exit_code == 0
    assert cli("stack", "--json").json()["data"]["model"]["name"] == "tiny"  # the first import stays default
    r = cli("default-model", "other", "-s")
    assert r.exit_code == 0 and cli("default-model", "--json").json()["data"]["default_model"] == "tiny"
    assert cli("default-model", "other").exit_code == 0
    assert cli("stack", "--json").json()["data"]["model"]["name"] == "other"
    r = llmos_proc("run", "hi", "--json", "-n", "2", "--model", "tiny")
    assert json.loads(r.stdout)["data"]["model"]["name"] == "tiny"
    r = cli("default-model", "nope")
    assert r.exit_code == ExitCode.NOT_FOUND


# ---------------------------------------------------------------- bad input, each in a subprocess


def _fails(r, code: ExitCode, *needles: str) -> None:
    assert r.exit_code == int(code), r
    for n in needles:
        assert n in r.stderr, (n, r)
    assert "Traceback" not in r.stderr


def test_no_model_installed(llmos_proc):
    _fails(llmos_proc("run", "hi"), ExitCode.NOT_FOUND, "no model is installed", "import-model")


def test_unknown_model_and_library(installed, llmos_proc):
    _fails(llmos_proc("run", "hi", "--model", "tiyn"), ExitCode.NOT_FOUND, "model 'tiyn' is not installed", "did you mean tiny")
    _fails(llmos_proc("run", "hi", "--lib", "nope"), ExitCode.NOT_FOUND, "library 'nope' is not installed")
    r = llmos_proc("run", "hi", "--lib", "x", "--no-libs", "--json")
    assert r.exit_code == ExitCode.USAGE and json.loads(r.stdout)["error"]["code"] == "usage"


def test_adapter_for_another_base(cli, installed, llmos_proc, tmp_path, write_source):
    # declared for another model
    assert cli("import-model", installed["other"].path, "--name", "other", "-y").exit_code == 0
    _library(cli, tmp_path / "a", write_source, "other-lib", "other", installed["lora_other"].path)
    _fails(llmos_proc("run", "hi", "--lib", "other-lib"), ExitCode.ABI, "built for base other, not for model tiny")
    # attached by default, it is simply left out of tiny's runs and used with other
    r = llmos_proc("run", "hi", "--json", "-n", "2")
    assert r.exit_code == 0 and json.loads(r.stdout)["data"]["libraries"] == []
    r = llmos_proc("run", "hi", "--json", "-n", "2", "--model", "other")
    assert r.exit_code == 0 and json.loads(r.stdout)["data"]["libraries"][0]["name"] == "other-lib"
    # declared for tiny, but its tensors were made for another model: the ABI check refuses it
    _library(cli, tmp_path / "b", write_source, "liar-lib", "tiny", installed["lora_other"].path)
    stack = cli("stack", "--json").json()["data"]
    liar = [x for x in stack["libraries"] if x["name"] == "liar-lib"][0]
    assert liar["fits"] is False and "does not fit" in liar["problems"][0]
    _fails(llmos_proc("run", "hi"), ExitCode.ABI, "liar-lib", "does not fit model tiny")
    r = llmos_proc("run", "hi", "--no-libs", "-n", "2")
    assert r.exit_code == 0, r


def test_corrupt_and_truncated_models(installed, llmos_proc, llmos_home, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(installed["base"].path.read_bytes()[:-200])
    _fails(llmos_proc("run", "hi", "--model", str(cut)), ExitCode.INVALID_PACKAGE, "truncated")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 10)
    _fails(llmos_proc("run", "hi", "--model", str(junk)), ExitCode.INVALID_PACKAGE, "not a GGUF file")
    # the installed blob damaged behind llmos' back
    blobs = [p for p in (llmos_home / "store").rglob("*") if p.is_file() and p.stat().st_size > 100_000]
    assert len(blobs) == 1
    blob = blobs[0]
    blob.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with open(blob, "r+b") as fh:
        fh.truncate(blob.stat().st_size // 2)
    _fails(llmos_proc("run", "hi"), ExitCode.INVALID_PACKAGE, "truncated")


def test_models_llama_cpp_cannot_load(installed, llmos_proc, tmp_path):
    """Readable GGUF headers that llama.cpp still refuses: a clean RUNTIME error, not a crash."""
    import numpy as np

    from tests.helpers.fixtures_models import HParams, _write_model, tiny_tokenizer

    base = installed["base"]
    no_q = {k: v for k, v in base.weights.items() if k != "blk.1.attn_q.weight"}
    _write_model(tmp_path / "missing.gguf", base.hp, no_q, tiny_tokenizer(), None)
    _fails(llmos_proc("run", "hi", "--model", str(tmp_path / "missing.gguf")), ExitCode.RUNTIME, "could not load", "blk.1.attn_q.weight")
    hp = HParams(n_vocab=base.hp.n_vocab)
    _write_model(tmp_path / "alien.gguf", hp, base.weights, tiny_tokenizer(), None, arch="alienformer")
    _fails(llmos_proc("run", "hi", "--model", str(tmp_path / "alien.gguf")), ExitCode.RUNTIME, "could not load", "alienformer")
    del np


def test_binary_stdin_is_not_an_error(installed, llmos_proc):
    import subprocess

    p = subprocess.run(
        [sys.executable, "-m", "llmos_cli", "run", "what is this", "--json", "-n", "2"],
        input=b"\xff\xfe binary \x00 junk",
        capture_output=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["data"]["usage"]["prompt_tokens"] > 10


def test_prompt_longer_than_the_context(installed, llmos_proc):
    long = "the model " * 300
    r = llmos_proc("run", long, "--json", "-n", "8")
    assert r.exit_code == ExitCode.CONTEXT, r
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "context_overflow"
    over = err["details"]["over_by"]
    assert over > 0 and f"{over} tokens too" in err["message"]  # says by how many tokens
    assert err["details"]["prompt_tokens"] > 256
    _fails(llmos_proc("run", long, "-n", "8"), ExitCode.CONTEXT, "tokens too")


def test_gpu_on_a_cpu_build(installed, llmos_proc):
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build can offload to a GPU")
    _fails(llmos_proc("run", "hi", "--device", "gpu"), ExitCode.RUNTIME, "no GPU offload", "CUDA")
    r = llmos_proc("-v", "run", "hi", "-n", "2", "--device", "auto")
    assert r.exit_code == 0 and "no GPU offload" in r.stderr  # auto falls back and says so with -v
    _fails(llmos_proc("run", "hi", "--device", "cpu", "--gpu-layers", "4"), ExitCode.USAGE, "--gpu-layers")


def test_bad_sampling_options(installed, llmos_proc):
    _fails(llmos_proc("run", "hi", "--top-p", "0"), ExitCode.USAGE, "--top-p")
    _fails(llmos_proc("run", "hi", "--lib", "x:abc"), ExitCode.USAGE, "not a number")
    _fails(llmos_proc("run"), ExitCode.USAGE, "nothing to ask")


def test_doctor(cli, installed, llmos_home):
    r = cli("doctor", "--json")
    assert r.exit_code == 0, r
    d = r.json()["data"]
    assert d["ok"] is True
    assert d["llama_cpp"]["version"] == "0.3.36" and d["llama_cpp"]["gpu_offload"] in (True, False)
    assert d["threads"]["cpu_count"] >= 1
    assert d["database"]["integrity"] == "ok" and d["database"]["packages"]["model"] == 1
    assert d["default_model"] == "tiny"
    assert d["paths"]["home"]["path"] == str(llmos_home)
    human = cli("doctor")
    assert "GPU offload" in human.stdout and "database" in human.stdout
    # a damaged database is reported with the STATE exit code
    db = llmos_home / "state.db"
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    raw = bytearray(db.read_bytes())
    raw[100:4096] = os.urandom(3996)
    db.write_bytes(bytes(raw))
    r = cli("doctor", "--json")
    assert r.exit_code == ExitCode.STATE, r
    assert r.json()["data"]["ok"] is False


def test_runtime_commands_do_not_import_llama_cpp_for_help():
    import subprocess

    code = "import sys; from llmos_cli.cli import build_app; build_app(); print('llama_cpp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out


def test_model_package_parameters_are_run_defaults(cli, models, llmos_proc, tmp_path, write_source):
    """[model.parameters] in a model package default the sampling; the command line wins."""
    folder = write_source(
        tmp_path / "src",
        "tuned",
        "1.0",
        "model",
        files={"model.gguf": models["base"].path.read_bytes()},
        extra={"model": {"file": "model.gguf", "parameters": {"temperature": 0.0, "max_tokens": 3, "top_p": 0.5}}},
    )
    assert cli("build", folder, "-o", tmp_path / "out").exit_code == 0
    assert cli("install", tmp_path / "out" / "tuned_1.0.llmos", "-y").exit_code == 0
    r = llmos_proc("run", "hello", "--model", "tuned", "--json")
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)["data"]
    assert data["sampling"]["temperature"] == 0.0 and data["sampling"]["top_p"] == 0.5
    assert data["sampling"]["max_tokens"] == 3 and data["usage"]["completion_tokens"] <= 3
    r = llmos_proc("run", "hello", "--model", "tuned", "--json", "-t", "0.7", "-n", "4")
    data = json.loads(r.stdout)["data"]
    assert data["sampling"]["temperature"] == 0.7 and data["sampling"]["max_tokens"] == 4
    assert data["sampling"]["top_p"] == 0.5


def test_the_model_asked_for_by_name_is_the_default_over_dependencies(cli, models, tmp_path):
    """Two models installed, one by name and one only as a library's base: runs use the one asked for."""
    from tests.helpers.installtools import build_registry, use_registry

    reg = build_registry(
        tmp_path,
        [
            {
                "name": "tiny",
                "version": "1.0",
                "kind": "model",
                "files": {"tiny.gguf": models["base"].path.read_bytes()},
                "extra": {"model": {"file": "tiny.gguf"}},
            },
            {
                "name": "other",
                "version": "1.0",
                "kind": "model",
                "files": {"other.gguf": models["other"].path.read_bytes()},
                "extra": {"model": {"file": "other.gguf"}},
            },
            {"name": "lib", "version": "1.0", "kind": "library", "base": "other"},
        ],
    )
    use_registry(cli, reg)
    assert cli("install", "-y", "tiny").exit_code == 0
    assert cli("install", "-y", "lib").exit_code == 0  # brings "other" as its base, marked automatic
    listed = {p["name"]: p for p in cli("list", "--json").json()["data"]["packages"]}
    assert listed["other"]["auto"] is True and listed["tiny"]["auto"] is False
    assert cli("stack", "--json").json()["data"]["model"]["name"] == "tiny"
    # asking for the second one by name makes the choice ambiguous again: llmos says so
    assert cli("install", "-y", "other").exit_code == 0
    r = cli("stack", "--json")
    assert r.exit_code == ExitCode.USAGE and "none is the default" in r.stderr
