"""scripts/side_by_side.py: two budget runs at once, their ensemble and its mixture, and the figures it
writes agree with what makemore itself says of the runs it made."""

import json
import subprocess
import sys

import pytest

from conftest import load_file, make_words

@pytest.fixture(scope="module")
def side_by_side():
    return load_file("scripts/side_by_side.py")


def test_two_seeds_at_once_their_ensemble_and_its_mixture(side_by_side, tmp_path):
    data = tmp_path / "words.txt"
    data.write_text("\n".join(make_words(2000, seed=5)) + "\n", encoding="utf-8")
    out, results = tmp_path / "pair", tmp_path / "pair.json"
    assert side_by_side.main(["--data", str(data), "--budget", "3", "--runs", "2", "--seed", "7",
                              "--out", str(out), "--results", str(results)]) == 0
    report = json.loads(results.read_text())
    assert report == json.loads((out / "side_by_side.json").read_text())
    assert [m["seed"] for m in report["members"]] == [7, 8]
    losses = [m["model_dev_loss"] for m in report["members"]]
    assert losses[0] != losses[1]  # other seeds, other models
    # the mean of two distributions scores at most the mean of their losses (Jensen), and the
    # mixture with the count model at most either of its parts (the weight is fitted on dev)
    assert report["ensemble_dev_loss"] <= sum(losses) / 2 + 1e-9
    assert report["mixture_dev_loss"] <= min(report["ensemble_dev_loss"], report["ngram_dev_loss"]) + 1e-9
    # what `makemore eval` says of the ensemble's neural part is the figure reported
    done = subprocess.run([sys.executable, "-m", "makemore", "eval", str(out / "ensemble"), "--neural", "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["loss"] == pytest.approx(report["ensemble_dev_loss"], abs=1e-6)


def test_refuses_an_existing_folder(side_by_side, tmp_path, words_file):
    (tmp_path / "pair").mkdir()
    with pytest.raises(SystemExit, match="exists"):
        side_by_side.main(["--data", str(words_file), "--budget", "3", "--out", str(tmp_path / "pair")])
