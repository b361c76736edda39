"""The command line end to end, and every bad input: one line on stderr, non-zero exit, no
traceback, no half-written run left behind."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

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
    assert set(result) == {"split", "loss", "perplexity", "examples", "predictor", "mix"}
    assert result["predictor"] == "model" and result["mix"] is False
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


# --- faults found when tried as a new user would (issue 8) ----------------------------------

LONG = ["--preset", "lecture", "--emb-dim", "4", "--hidden", "16", "--steps", "2000000", "--eval-interval", "50"]


def _start(args, tmp_path, name):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    err = open(tmp_path / f"{name}.err", "w")
    return subprocess.Popen([sys.executable, "-m", "makemore", *args], stdout=subprocess.PIPE, stderr=err,
                            text=True, env=env), tmp_path / f"{name}.err"


def _wait_for(path, rows=1, timeout=60):
    """Until `path` exists with more than `rows` lines."""
    import time

    deadline = time.monotonic() + timeout
    while not path.exists() or len(path.read_text().splitlines()) <= rows:
        assert time.monotonic() < deadline, f"{path} never got {rows} rows"
        time.sleep(0.05)


def test_two_trainings_started_at_once_with_one_out(tmp_path):
    """Whichever starts second gets one error line; the first run is left whole."""
    from conftest import make_words

    data = tmp_path / "words.txt"
    data.write_text("\n".join(make_words()))
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), *TRAIN[:-3], "--steps", "200", "--quiet"]
    procs = [_start(args, tmp_path, f"p{i}") for i in range(2)]
    codes = [p.wait(timeout=120) for p, _ in procs]
    errs = [e.read_text() for _, e in procs]
    assert sorted(codes) == [0, 1], errs
    loser = errs[codes.index(1)].strip().splitlines()
    assert len(loser) == 1 and "already exists" in loser[0] and "Traceback" not in loser[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 200


def test_a_directory_made_between_the_check_and_the_start_is_refused_and_kept(tmp_path, capsys, monkeypatch):
    from conftest import make_words

    from makemore import outputs
    data = tmp_path / "words.txt"
    data.write_text("\n".join(make_words()))
    out = tmp_path / "run"
    real = outputs.check_new_dir

    def someone_else_first(path, *args, **kwargs):
        checked = real(path, *args, **kwargs)
        if checked == out:  # another process makes it just after our check
            out.mkdir()
            (out / "theirs.txt").write_text("another run's file")
        return checked

    monkeypatch.setattr(outputs, "check_new_dir", someone_else_first)
    code = main(["train", "--data", str(data), "--out", str(out), *TRAIN])
    assert "already exists" in one_error_line(capsys, code)
    assert (out / "theirs.txt").read_text() == "another run's file"


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_saves_and_prints_the_resume_command(tmp_path, sig, code):
    """kill (SIGTERM) as Ctrl-C (SIGINT): the run stops at a step, saves, says how to resume."""
    import signal

    from conftest import make_words
    from makemore.rundir import load_checkpoint

    data = tmp_path / "words.txt"
    data.write_text("\n".join(make_words()))
    out = tmp_path / "run"
    proc, err_path = _start(["train", "--data", str(data), "--out", str(out), *LONG], tmp_path, "t")
    _wait_for(out / "metrics.csv", rows=2)  # header, step 0, and a row of steps done
    proc.send_signal(getattr(signal, sig))
    assert proc.wait(timeout=60) == code
    err = err_path.read_text()
    assert "Traceback" not in err
    note = [line for line in err.splitlines() if "interrupted at step" in line]
    assert len(note) == 1 and note[0].endswith(f"progress saved. Continue with: makemore train --resume {out}")
    step = int(note[0].split("interrupted at step ")[1].split(";")[0])
    _, meta = load_checkpoint(out / "last.safetensors")
    assert meta["step"] == step > 0
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert main(["train", "--resume", str(out), "--steps", str(step + 20), "--quiet"]) == 0


def test_ctrl_c_while_the_command_is_still_importing_is_one_line(tmp_path):
    """Before cli.main runs (torch takes a second or more to import) nothing caught it."""
    import signal
    import time

    data = tmp_path / "words.txt"
    data.write_text("emma\nolivia\nava\n" * 100)
    proc, err_path = _start(["data", "--data", str(data)], tmp_path, "d")
    # once torch's libraries are mapped it is importing (after makemore's first line), for a second or so
    maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.monotonic() + 60
    while "libc10" not in maps.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    assert err_path.read_text() == "makemore: interrupted\n"


def test_sample_tags_and_a_run_summary(run_dir, capsys):
    from makemore.runs import load_run

    assert main(["sample", str(run_dir), "-n", "12", "--seed", "3", "--json"]) == 0
    tagged = json.loads(capsys.readouterr().out)
    assert main(["sample", str(run_dir), "-n", "12", "--seed", "3", "--tags"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{s['text']}\t{s['tag']}" for s in tagged]
    assert load_run(run_dir).summary["dev_loss"] == json.loads((run_dir / "summary.json").read_text())["dev_loss"]


def test_resume_may_take_another_thread_count(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert main(["train", "--resume", str(run), "--steps", "320", "--threads", "1", "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 320


def test_the_plot_says_what_the_dev_curve_was_estimated_on(run_dir):
    from makemore.cli.experiments import _dev_label
    from makemore.runs import read_run_files

    _, _, _, vocab, splits = read_run_files(run_dir)
    assert _dev_label(vocab, splits["dev"], 10**9) == "dev (whole split)"
    label = _dev_label(vocab, splits["dev"], 100)
    assert label.startswith("dev (estimate on 100 of its ") and label.endswith(" examples)")


def test_an_empty_exclude_list_leaves_nothing_out_and_a_long_line_is_cut_short(run_dir, tmp_path, capsys):
    empty = tmp_path / "taken.txt"
    empty.write_text("\n")
    assert main(["sample", str(run_dir), "-n", "5", "--seed", "2", "--exclude", str(empty)]) == 0
    with_empty = capsys.readouterr().out
    assert main(["sample", str(run_dir), "-n", "5", "--seed", "2"]) == 0
    assert capsys.readouterr().out == with_empty
    data = tmp_path / "long.txt"
    data.write_text("\n".join(["ab" * 50_000] + ["abc", "bcd", "cde"] * 20) + "\n")
    assert main(["data", "--data", str(data)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("longest word"))
    assert len(line) < 120 and "100,000" in line


def test_a_picture_takes_the_format_its_name_says(run_dir, tmp_path, capsys):
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "loss.svg")]) == 0
    assert (tmp_path / "loss.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert main(["embeddings", str(run_dir), "--out", str(tmp_path / "emb.jpg")]) == 0
    assert (tmp_path / "emb.jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG's start of image
    capsys.readouterr()
    line = one_error_line(capsys, main(["plot", str(run_dir), "--out", str(tmp_path / "loss.txt")]))
    assert "ending in one of them" in line and not (tmp_path / "loss.txt").exists()


def test_an_unknown_flag_names_the_command_whose_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--stepz", "3"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "makemore train: error: unrecognized arguments: --stepz 3" in err
    assert "(see makemore train --help)" in err
    with pytest.raises(SystemExit):
        main(["--bogus"])
    assert "(see makemore --help)" in capsys.readouterr().err


def test_words_may_come_after_flags(run_dir, capsys):
    assert main(["score", str(run_dir), "mari", "--json", "kato"]) == 0
    assert [row["word"] for row in json.loads(capsys.readouterr().out)] == ["mari", "kato"]
    assert main(["score", str(run_dir), "--json", "mari", "--verbose", "kato"]) == 0
    assert [row["word"] for row in json.loads(capsys.readouterr().out)] == ["mari", "kato"]
    with pytest.raises(SystemExit):
        main(["score", str(run_dir), "mari", "--bogus", "kato"])
    assert "makemore score: error: unrecognized arguments: --bogus" in capsys.readouterr().err


def test_ctrl_c_in_sweep_or_tune_says_how_to_go_on(monkeypatch, capsys, tmp_path):
    import makemore.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    for command, expected in (("sweep", "skips the configurations that finished"), ("tune", "continues the study")):
        monkeypatch.setitem(cli.COMMANDS, command, (cli.COMMANDS[command][0], interrupted))
        argv = [command, "--data", "names", "--out", str(tmp_path / command)]
        assert main([*argv, "--grid", "hidden=8"] if command == "sweep" else argv) == 130
        assert expected in capsys.readouterr().err


def test_tables_of_words_align_by_terminal_columns():
    from makemore.cli.common import columns, pad

    assert columns("anna") == 4 and columns("日本") == 4 and columns("e\u0301") == 1  # CJK wide, a mark none
    rows = [pad(w, 6) + "|" for w in ("anna", "日本", "ca\u0301t")]
    assert {columns(r) for r in rows} == {7}
