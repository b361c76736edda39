"""The command line end to end, and every bad input: one line on stderr, non-zero exit, no
traceback, no half-written run left behind."""

import json
import os
import pickle
import subprocess
import sys

import pytest
from safetensors.torch import save_file
import torch

from makemore.cli import main

TRAIN = ["--block-size", "3", "--emb-dim", "8", "--hidden", "32", "--batch-size", "32",
         "--steps", "300", "--preset", "lecture", "--lr", "0.1", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from conftest import make_words

    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "words.txt"
    data.write_text("\n".join(make_words()))
    run = tmp / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *TRAIN]) == 0
    return run


def one_error_line(capsys, code, expected_code=1):
    captured = capsys.readouterr()
    assert code == expected_code
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("makemore"), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_train_eval_sample_score(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"params", "steps", "train_loss", "dev_loss", "seconds"} <= set(summary)
    assert summary["steps"] == 300
    capsys.readouterr()

    assert main(["eval", str(run_dir), "--split", "dev", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"split", "loss", "perplexity", "examples"}
    assert result["loss"] == pytest.approx(summary["dev_loss"])

    assert main(["sample", str(run_dir), "-n", "25", "--seed", "3", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first) == 25 and all(set(s) == {"text", "tag"} for s in first)
    assert {s["tag"] for s in first} <= {"train", "dev", "test", "new"}
    assert main(["sample", str(run_dir), "-n", "25", "--seed", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [s["text"] for s in first]  # same seed, same names

    assert main(["sample", str(run_dir), "-n", "10", "--seed", "1", "--unique", "--new-only", "--json",
                 "--prefix", "ma"]) == 0
    samples = json.loads(capsys.readouterr().out)
    texts = [s["text"] for s in samples]
    assert len(set(texts)) == len(texts) and all(s["tag"] == "new" for s in samples)
    assert all(t.startswith("ma") for t in texts)

    assert main(["score", str(run_dir), "mana", "jjjj", "--json", "--verbose"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores[0]["nll"] < scores[1]["nll"]
    assert len(scores[0]["chars"]) == 5
    assert scores[0]["nll_per_char"] == pytest.approx(scores[0]["nll"] / 5)


def test_data_command_json(names_path, capsys):
    assert main(["data", "--data", str(names_path), "--block-size", "3", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["words"] == 32033 and stats["vocab"] == ".abcdefghijklmnopqrstuvwxyz"
    assert stats["examples"] == {"train": 182441, "dev": 22902, "test": 22803}


def _bad_file(tmp_path, content: bytes):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("make_args", [
    lambda t: ["--data", str(t / "missing.txt")],
    lambda t: ["--data", _bad_file(t, b"")],
    lambda t: ["--data", _bad_file(t, b"\n \n\n")],
    lambda t: ["--data", _bad_file(t, b"caf\xe9\n")],
    lambda t: ["--data", _bad_file(t, bytes(range(256)))],
    lambda t: ["--data", _bad_file(t, b"ann\nbob\n")],
    lambda t: ["--data", _bad_file(t, b"ann\nbob\n" * 20), "--block-size", "0"],
    lambda t: ["--data", _bad_file(t, b"ann\nbob\n" * 20), "--hidden", "0"],
    lambda t: ["--data", _bad_file(t, b"ann\nbob\n" * 20), "--emb-dim", "-1"],
    lambda t: ["--data", _bad_file(t, b"ann\nbob\n" * 20), "--batch-size", "0"],
    lambda t: ["--data", _bad_file(t, b"ann\nbob\n" * 20), "--steps", "0"],
    lambda t: ["--data", _bad_file(t, b"ann\nbob\n" * 20), "--lr", "-0.1"],
    lambda t: ["--data", _bad_file(t, b"ann\nbob\n" * 20), "--lr", "0"],
    lambda t: ["--data", _bad_file(t, b"ann\nbob\n" * 20), "--preset", "nope"],
    lambda t: ["--data", _bad_file(t, b"ann\nbob\n" * 20), "--optimizer", "adam"],
])
def test_bad_training_input(tmp_path, capsys, make_args):
    out = tmp_path / "run"
    code = main(["train", *make_args(tmp_path), "--out", str(out), "--quiet"])
    one_error_line(capsys, code)
    assert not out.exists()


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--steps", "many"])
    one_error_line(capsys, e.value.code, expected_code=2)


def test_out_that_exists_is_refused_and_untouched(run_dir, capsys, tmp_path):
    before = (run_dir / "best.safetensors").read_bytes()
    code = main(["train", "--data", str(tmp_path), "--out", str(run_dir)])
    one_error_line(capsys, code)
    code = main(["train", "--data", "names", "--out", str(run_dir)])
    assert "already exists" in one_error_line(capsys, code)
    assert (run_dir / "best.safetensors").read_bytes() == before


def test_run_that_is_not_a_run_dir(tmp_path, capsys):
    for cmd in (["eval", str(tmp_path)], ["sample", str(tmp_path / "nothing")], ["score", str(tmp_path), "abc"],
                ["train", "--resume", str(tmp_path)]):
        one_error_line(capsys, main(cmd))


def _copy_run(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign", "pickle", "wrong_shape"])
def test_bad_checkpoints(run_dir, tmp_path, capsys, damage):
    run = _copy_run(run_dir, tmp_path)
    ckpt = run / "best.safetensors"
    marker = tmp_path / "pwned"
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    elif damage == "garbage":
        ckpt.write_bytes(os.urandom(4096))
    elif damage == "foreign":
        save_file({"weight": torch.zeros(3)}, str(ckpt))
    elif damage == "pickle":
        exploit = _Exploit()
        exploit.marker = marker
        ckpt.write_bytes(pickle.dumps({"C": exploit}))
    elif damage == "wrong_shape":
        save_file({"C": torch.zeros(2, 2)}, str(ckpt), metadata={"format": "makemore-run/1"})
    for cmd in (["eval", str(run)], ["sample", str(run)], ["score", str(run), "ana"]):
        one_error_line(capsys, main(cmd))
    assert not marker.exists()


def test_sample_prefix_outside_vocabulary(run_dir, capsys):
    line = one_error_line(capsys, main(["sample", str(run_dir), "--prefix", "Q!"]))
    assert "vocabulary" in line


def test_subprocess_smoke(run_dir, tmp_path):
    """The installed console script: help with an example, and an error without traceback."""
    exe = [sys.executable, "-m", "makemore"]
    out = subprocess.run([*exe, "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "example:" in out.stdout
    bad = subprocess.run([*exe, "eval", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    ok = subprocess.run([*exe, "sample", str(run_dir), "-n", "3", "--seed", "0"], capture_output=True, text=True)
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 3
