"""Piped input (or ``--file``) longer than the context: ``--long index`` (default), ``map-reduce``, ``refuse``.

Each mode runs ``llmos run`` in a real subprocess on a real tiny llama.cpp model (generated with
gguf-py; its answers are noise, so the tests check what went into the prompts, which parts of the
input were used, the citations and the exit codes, not the wording of the answer).
"""

from __future__ import annotations

import json

import pytest

from llmos_cli.errors import ExitCode
from tests.helpers.fixtures_models import write_tiny_llama

FILLER = "the river market town people walked along old roads where carts carried grain and salt between villages"


def _document(words: int = 1500) -> str:
    base = FILLER.split()
    body = [base[i % len(base)] for i in range(words)]
    body[words // 2] = "Kelmorath. The harbour of Kelmorath is called Pellindra."
    sentences = [" ".join(body[i : i + 12]) + "." for i in range(0, words, 12)]
    sentences = [x[0].upper() + x[1:] for x in sentences]
    return "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5))


@pytest.fixture
def model(cli, tmp_path):
    m = write_tiny_llama(tmp_path / "tiny.gguf", n_ctx=512)
    r = cli("import-model", str(m.path), "--name", "tiny", "-y")
    assert r.exit_code == 0, r
    return m


def _run(llmos_proc, *args, input=None):
    return llmos_proc("run", *args, "-n", "4", "--temperature", "0", "--no-libs", input=input)


def test_default_indexes_the_input_and_cites_its_parts(model, llmos_proc):
    doc = _document()
    r = _run(llmos_proc, "What is the harbour of Kelmorath called?", "--json", input=doc)
    assert r.exit_code == 0, r
    env = json.loads(r.stdout)
    li = env["data"]["extra"]["long_input"]
    assert li["mode"] == "index" and li["label"] == "stdin" and li["chunks"] > 5
    assert li["input_tokens"] > 512  # it did not fit
    assert li["used"] and all(u.startswith("stdin#") for u in li["used"])
    chunks = [k for k in env["data"]["extra"]["knowledge"] if k["library"] == ""]
    assert [k["citation"] for k in chunks] == [f"[{u}]" for u in li["used"]]
    assert "Pellindra" in chunks[0]["text"]  # the part that names what is asked about comes first
    assert any("does not fit the context" in w for w in env["warnings"])
    # the prompt holds the chosen parts, not the whole input
    assert env["data"]["usage"]["prompt_tokens"] < 512
    # people see the warning and the sources on stderr; stdout is only the answer
    r = _run(llmos_proc, "What is the harbour of Kelmorath called?", input=doc)
    assert r.exit_code == 0, r
    assert "does not fit the context" in r.stderr and "[stdin#" in r.stderr
    assert "[stdin#" not in r.stdout


def test_file_input_is_cited_by_its_name(model, llmos_proc, tmp_path):
    f = tmp_path / "report.txt"
    f.write_text(_document())
    r = _run(llmos_proc, "What is the harbour of Kelmorath called?", "--file", str(f), "--json")
    assert r.exit_code == 0, r
    li = json.loads(r.stdout)["data"]["extra"]["long_input"]
    assert li["label"] == "report.txt" and all(u.startswith("report.txt#") for u in li["used"])
    r = _run(llmos_proc, "q", "--file", str(tmp_path / "missing.txt"))
    assert r.exit_code == ExitCode.NOT_FOUND and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_a_short_input_is_used_whole(model, llmos_proc):
    r = _run(llmos_proc, "Summarise.", "--json", input="Kelmorath has a harbour called Pellindra.")
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)["data"]
    assert "long_input" not in data["extra"]


def test_map_reduce_reads_every_part(model, llmos_proc):
    r = _run(llmos_proc, "What is the harbour of Kelmorath called?", "--long", "map-reduce", "--json", input=_document(900))
    assert r.exit_code == 0, r
    li = json.loads(r.stdout)["data"]["extra"]["long_input"]
    assert li["mode"] == "map-reduce" and li["chunks"] >= 2
    assert li["used"] == [f"stdin#{i}" for i in range(li["chunks"])]  # every part, in order
    assert set(li["parts_answered"]) <= set(li["used"])


def test_refuse_keeps_exit_13_and_bad_values_are_usage_errors(model, llmos_proc):
    r = _run(llmos_proc, "What is it called?", "--long", "refuse", input=_document())
    assert r.exit_code == ExitCode.CONTEXT, r
    assert "tokens too long" in r.stderr and "Traceback" not in r.stderr
    r = _run(llmos_proc, "q", "--long", "sometimes", input="x")
    assert r.exit_code == ExitCode.USAGE and "--long takes" in r.stderr
    # no prompt to answer from a long input: a usage error, not a silent cut
    r = _run(llmos_proc, input=_document())
    assert r.exit_code == ExitCode.USAGE and "no prompt" in r.stderr
