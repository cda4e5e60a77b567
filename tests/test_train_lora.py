"""``llmos train``: a small real run (seconds) lowers the loss and writes an adapter that passes the ABI check."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.trainkit import make_base, require_train_extra, write_library

require_train_extra()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("tiny"), weight_scale=1.0)


def test_train_cli_lowers_loss_and_writes_a_fitting_adapter(base, tmp_path, cli):
    from llmos_cli.gguf_info import read_header
    from llmos_cli.runtime.abi import check_adapter
    from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine

    lib = write_library(tmp_path)
    r = cli("train", str(lib), "--base", str(base.gguf), "--steps", "40", "--threads", "1", "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert data["loss_end"] < 0.9 * data["loss_start"], data  # measurably lower (about 0.8 nats here)
    assert data["abi_ok"] is True
    assert data["data"]["qa"] == 5 and data["data"]["documents"] == 1
    assert data["eval"]["questions"] == 5 and data["eval"]["exact_match"] is not None
    adapter = lib / "adapter.gguf"
    head = read_header(adapter)
    assert (head.general_type, head.adapter_type, head.architecture) == ("adapter", "lora", "llama")
    assert head.lora_alpha == pytest.approx(8.0)
    assert check_adapter(head, read_header(base.gguf)) == []
    from gguf import GGUFReader

    base_field = GGUFReader(str(adapter)).fields["llmos.base"]
    assert bytes(base_field.parts[-1]).decode() == base.gguf.name  # the base's file name, not a local path
    with LlamaCppEngine(base.gguf, EngineOptions(n_ctx=64, n_threads=1)) as eng:
        eng.set_adapters([(adapter, 1.0)])  # llama.cpp accepts it


def test_train_is_deterministic_with_a_seed(base, tmp_path):
    from llmos_cli.train.lora import train_library

    lib = write_library(tmp_path)
    one = train_library(lib, str(base.gguf), overrides={"steps": 6, "seed": 5}, threads=1, out=tmp_path / "one.gguf", evaluate=False)
    two = train_library(lib, str(base.gguf), overrides={"steps": 6, "seed": 5}, threads=1, out=tmp_path / "two.gguf", evaluate=False)
    assert one.losses == two.losses
    assert (tmp_path / "one.gguf").read_bytes() == (tmp_path / "two.gguf").read_bytes()


def test_train_from_a_hugging_face_checkpoint(base, tmp_path):
    from llmos_cli.train.lora import train_library

    lib = write_library(tmp_path)
    res = train_library(lib, str(base.hf_dir), overrides={"steps": 4, "rank": 2, "target_modules": ["q_proj", "v_proj"]}, threads=1, evaluate=False)
    assert res.adapter.is_file() and res.abi_ok is None  # no full GGUF of a HF base to check against
    assert res.options["target_modules"] == ["q_proj", "v_proj"]


def test_simulate_writes_nothing(base, tmp_path, cli):
    lib = write_library(tmp_path)
    r = cli("train", str(lib), "--base", str(base.gguf), "-s", "--rank", "2")
    assert r.exit_code == 0, r
    assert "rank 2" in r.stdout
    assert not (lib / "adapter.gguf").exists()


def test_bad_input_is_refused_cleanly(base, tmp_path, cli):
    lib = write_library(tmp_path)
    r = cli("train", str(lib), "--base", str(base.gguf), "--target", "lm_head")
    assert r.exit_code == 2 and "unknown target module" in r.stderr
    r = cli("train", str(lib), "--base", str(tmp_path / "missing.gguf"))
    assert r.exit_code == 3 and "not found" in r.stderr
    r = cli("train", str(lib), "--base", "no-such-model")
    assert r.exit_code == 3 and "llmos install no-such-model" in r.stderr
    (lib / "train" / "qa.jsonl").write_text('{"questions": ["x?"]}\n')
    r = cli("train", str(lib), "--base", str(base.gguf))
    assert r.exit_code == 5 and "answer" in r.stderr
    r = cli("train", str(tmp_path / "nolib"), "--base", str(base.gguf))
    assert r.exit_code == 5
    assert not (lib / "adapter.gguf").exists()


def test_without_the_train_extra_the_message_names_it(tmp_path):
    """torch blocked (as if not installed): one clear line naming the extra, no traceback."""
    lib = write_library(tmp_path)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from llmos_cli.__main__ import main\n"
        f"sys.argv = ['llmos', 'train', {str(lib)!r}, '--base', 'x.gguf', '--json']\n"
        "sys.exit(main())\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "pip install 'llmos[train]'" in p.stderr and "Traceback" not in p.stderr
    err = json.loads(p.stdout)["error"]
    assert err["code"] == "missing_extra" and "torch" in err["message"]


def test_companion_adapters_are_used_but_not_exported(base, tmp_path, cli):
    """A frozen companion changes what the new adapter learns; only the new adapter is written."""
    from llmos_cli.gguf_info import read_header
    from tests.helpers.trainkit import random_adapter

    comp = random_adapter(base, tmp_path / "comp.gguf", rank=3, targets=["q_proj", "down_proj"], seed=9)
    lib = write_library(tmp_path)
    r = cli("train", str(lib), "--base", str(base.gguf), "--steps", "8", "--threads", "1", "--json", "--companion", str(comp), "--no-eval")
    assert r.exit_code == 0, r
    assert r.json()["data"]["options"]["companions"] == [str(comp)]
    with_comp = (lib / "adapter.gguf").read_bytes()
    ranks = {shape[-1] for name, shape in read_header(lib / "adapter.gguf").tensors.items() if name.endswith(".lora_a")}
    assert ranks == {4}  # the library's own rank, not the companion's
    r = cli("train", str(lib), "--base", str(base.gguf), "--steps", "8", "--threads", "1", "--no-eval")
    assert r.exit_code == 0, r
    assert (lib / "adapter.gguf").read_bytes() != with_comp
    r = cli("train", str(lib), "--base", str(base.gguf), "--companion", str(tmp_path / "nope.gguf"))
    assert r.exit_code == 3 and "companion" in r.stderr


def _delta_norm(adapter, base_gguf):
    import numpy as np

    from llmos_cli.train.convert import gguf_state_dict
    from llmos_cli.train.export import read_lora_gguf

    hp, sd = gguf_state_dict(base_gguf)
    pairs, _ = read_lora_gguf(adapter, hp)
    return float(np.mean([np.linalg.norm(p.b @ p.a * p.scaling) / np.linalg.norm(sd[k]) for k, p in pairs.items()]))


@pytest.mark.parametrize("option", ["delta_penalty", "silence_penalty"])
def test_penalties_keep_the_change_small(base, tmp_path, option):
    import json as _json

    from llmos_cli.train.lora import train_library

    lib = write_library(tmp_path)
    replay = lib / "train" / "replay.jsonl"
    replay.write_text("".join(_json.dumps({"questions": [f"What is {w}?"], "answer": "I don't know."}) + "\n" for w in ("blue", "salt", "a fox")))
    common = {"steps": 12, "lr": 0.02, "seed": 1, "replay": ["train/replay.jsonl"], "replay_fraction": 0.5}
    train_library(lib, str(base.gguf), overrides=common, threads=1, out=tmp_path / "free.gguf", evaluate=False)
    train_library(lib, str(base.gguf), overrides={**common, option: 50.0}, threads=1, out=tmp_path / "held.gguf", evaluate=False)
    assert _delta_norm(tmp_path / "held.gguf", base.gguf) < 0.8 * _delta_norm(tmp_path / "free.gguf", base.gguf)


def _factors(adapter, base_gguf):
    from llmos_cli.train.convert import gguf_state_dict
    from llmos_cli.train.export import read_lora_gguf

    hp, _ = gguf_state_dict(base_gguf)
    pairs, _ = read_lora_gguf(adapter, hp)
    return {k: (p.a, p.b * p.scaling) for k, p in pairs.items()}


def test_init_continues_from_an_existing_adapter(base, tmp_path, cli):
    """--init loads the adapter's factors: a near-zero learning rate gives the same adapter back,
    and the starting loss is the trained adapter's, not the bare base's."""
    import numpy as np

    from llmos_cli.train.lora import train_library

    lib = write_library(tmp_path)
    first = train_library(lib, str(base.gguf), overrides={"steps": 40}, threads=1, out=tmp_path / "first.gguf", evaluate=False)
    again = train_library(
        lib,
        str(base.gguf),
        overrides={"steps": 1, "lr": 1e-12, "init": str(tmp_path / "first.gguf")},
        threads=1,
        out=tmp_path / "again.gguf",
        evaluate=False,
    )
    assert again.loss_start == pytest.approx(first.loss_end, rel=1e-4)
    assert again.loss_start < first.loss_start - 0.1  # starts where the first run ended
    one, two = _factors(tmp_path / "first.gguf", base.gguf), _factors(tmp_path / "again.gguf", base.gguf)
    assert one.keys() == two.keys()
    for k in one:
        np.testing.assert_allclose(two[k][0], one[k][0], atol=1e-6)
        np.testing.assert_allclose(two[k][1], one[k][1], atol=1e-6)
    # a different alpha is folded into B: the same change, whatever the scale
    other = train_library(
        lib,
        str(base.gguf),
        overrides={"steps": 1, "lr": 1e-12, "alpha": 2.0, "init": str(tmp_path / "first.gguf")},
        threads=1,
        out=tmp_path / "other.gguf",
        evaluate=False,
    )
    assert other.loss_start == pytest.approx(first.loss_end, rel=1e-4)

    before = (lib / "adapter.gguf").exists()
    r = cli("train", str(lib), "--base", str(base.gguf), "--init", str(tmp_path / "first.gguf"), "--rank", "2")
    assert r.exit_code == 2 and "rank 4" in r.stderr and "--rank 4" in r.stderr
    r = cli("train", str(lib), "--base", str(base.gguf), "--init", str(tmp_path / "first.gguf"), "--target", "q_proj")
    assert r.exit_code == 2 and "not a target module" in r.stderr
    r = cli("train", str(lib), "--base", str(base.gguf), "--init", str(tmp_path / "missing.gguf"))
    assert r.exit_code == 3 and "initial adapter" in r.stderr
    assert (lib / "adapter.gguf").exists() == before


def test_each_companion_has_its_own_probability(base, tmp_path, cli):
    """PATH@0 is never on (same adapter as without it), PATH@1 always; tables work in llmos.toml."""
    from llmos_cli.pkg.manifest import load_manifest
    from llmos_cli.train.lora import TrainOptions
    from tests.helpers.trainkit import random_adapter

    comp = random_adapter(base, tmp_path / "comp.gguf", rank=3, targets=["q_proj", "down_proj"], seed=9)
    lib = write_library(tmp_path)
    args = ["train", str(lib), "--base", str(base.gguf), "--steps", "6", "--threads", "1", "--no-eval"]
    outs = {}
    for tag, extra in {"none": [], "never": ["--companion", f"{comp}@0"], "always": ["--companion", f"{comp}@1"]}.items():
        r = cli(*args, *extra, "-o", str(tmp_path / f"{tag}.gguf"))
        assert r.exit_code == 0, r
        outs[tag] = (tmp_path / f"{tag}.gguf").read_bytes()
    assert outs["never"] == outs["none"]
    assert outs["always"] != outs["none"]
    r = cli(*args, "--companion", f"{comp}@1.5")
    assert r.exit_code == 2 and "probability" in r.stderr

    m = load_manifest(lib)
    table = dict(m.train.options)
    table["companions"] = [{"file": "../comp.gguf", "prob": 0.25}, "../comp.gguf", {"file": "x.gguf"}]
    table["companion_prob"] = 0.5
    opts = TrainOptions.from_manifest(table)
    assert opts.companion_specs() == [("../comp.gguf", 0.25), ("../comp.gguf", 0.5), ("x.gguf", 0.5)]


def test_companion_sampling_modes():
    """independent coin flips vs. subsets of uniform size; probability 1 and 0 are honoured by both."""
    import random
    from collections import Counter

    from llmos_cli.train.companions import sample_active

    rng = random.Random(0)
    probs = [1.0, 0.5, 0.5, 0.5, 0.0]
    for mode in ("independent", "subsets"):
        draws = [sample_active(probs, mode, rng) for _ in range(4000)]
        assert all(d[0] and not d[4] for d in draws)
        sizes = Counter(sum(d[1:4]) for d in draws)
        share = {k: v / len(draws) for k, v in sizes.items()}
        if mode == "independent":  # binomial(3, 0.5): none and all 1/8 each
            assert abs(share[0] - 0.125) < 0.03 and abs(share[3] - 0.125) < 0.03
        else:  # uniform size: none and all 1/4 each
            assert abs(share[0] - 0.25) < 0.03 and abs(share[3] - 0.25) < 0.03


def test_a_library_folder_as_companion_brings_its_questions(base, tmp_path, cli):
    """A companion given as a library folder is its [adapter] file plus its own questions: with
    companion_data_fraction 0 it trains exactly as the bare GGUF would; above 0 its questions join
    the batches while it is on."""
    import shutil

    from llmos_cli.train.lora import train_library

    other = write_library(tmp_path / "o", "other-lib", facts=[("Quelmar", "Dry cough"), ("Vintrex", "Sore knees")])
    train_library(other, str(base.gguf), overrides={"steps": 10}, threads=1, evaluate=False)
    shutil.copyfile(other / "adapter.gguf", tmp_path / "other.gguf")
    lib = write_library(tmp_path)
    common = {"steps": 6, "seed": 3}
    runs = {
        "gguf": [str(tmp_path / "other.gguf") + "@1"],
        "folder-no-data": [str(other) + "@1"],
        "folder": [str(other) + "@1"],
    }
    outs = {}
    for tag, comps in runs.items():
        frac = 0.0 if tag == "folder-no-data" else 0.5
        train_library(
            lib,
            str(base.gguf),
            overrides={**common, "companions": comps, "companion_data_fraction": frac},
            threads=1,
            out=tmp_path / f"{tag}.gguf",
            evaluate=False,
        )
        outs[tag] = (tmp_path / f"{tag}.gguf").read_bytes()
    assert outs["folder-no-data"] == outs["gguf"]  # same adapter loaded from the folder
    assert outs["folder"] != outs["gguf"]  # its questions were trained on too

    (other / "adapter.gguf").unlink()
    r = cli("train", str(lib), "--base", str(base.gguf), "--companion", str(other))
    assert r.exit_code == 3 and "has no adapter" in r.stderr
