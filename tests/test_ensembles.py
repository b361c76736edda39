"""Seed ensembles whose members train side by side, one process each (ensembles.py)."""

import json
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from makemore import ensembles, load_corpus
from makemore.cli import main
from makemore.ensembles import member_main, side_by_side, train_ensemble
from makemore.jobs import dump, load
from makemore.errors import UserError


from test_members import small as tiny  # a member's tiny configs


@pytest.fixture
def corpus(words_file):
    return load_corpus(words_file)


def test_side_by_side_trains_the_same_members_as_one_loop(corpus, tmp_path):
    """A member's weights and minibatches come from its seed alone: in its own process it ends
    where it ends as a member of the shared loop (up to float rounding)."""
    model_cfg, train_cfg = tiny(corpus, threads=1)
    apart = train_ensemble(corpus, model_cfg, train_cfg, 2, tmp_path / "apart", progress=False, processes=True)
    together = train_ensemble(corpus, model_cfg, train_cfg, 2, tmp_path / "together", progress=False,
                              processes=False)
    assert (apart.processes, together.processes) == (2, 1)
    assert apart.members == together.members == ["seed-42", "seed-43"]
    for a, b in zip(apart.results, together.results):
        assert a.status == "completed" and a.summary["steps"] == 60 and a.summary["side_by_side"] == 2
        assert a.summary["dev_loss"] == pytest.approx(b.summary["dev_loss"], abs=1e-4)
        for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4, msg=name)
    assert apart.dev_loss == pytest.approx(together.dev_loss, abs=1e-4)
    assert json.loads((tmp_path / "apart" / "ensemble.json").read_text())["seeds"] == [42, 43]
    assert main(["eval", str(tmp_path / "apart")]) == 0


def test_side_by_side_where_the_cpu_has_a_core_for_each_member(corpus, monkeypatch):
    _, train_cfg = tiny(corpus, device="cpu")
    monkeypatch.setattr(ensembles, "usable_cores", lambda: 2)
    assert side_by_side(2, train_cfg)
    assert not side_by_side(1, train_cfg)  # one seed is a plain run
    assert not side_by_side(3, train_cfg)  # more members than cores: in turn, in one loop
    assert not side_by_side(2, replace(train_cfg, threads=2))  # the user's threads for each would not fit
    monkeypatch.setattr(ensembles, "usable_cores", lambda: 4)
    assert side_by_side(2, replace(train_cfg, threads=2)) and side_by_side(4, train_cfg)


def test_a_members_error_reaches_the_caller_as_it_was(corpus, tmp_path, monkeypatch):
    model_cfg, train_cfg = tiny(corpus)
    shared, job, result = tmp_path / "shared", tmp_path / "job", tmp_path / "result"
    dump(shared, (corpus, replace(model_cfg, vocab_size=5), {}, None))
    dump(job, (train_cfg, None, False))
    monkeypatch.setattr(sys, "argv", ["-c", str(shared), str(job), str(result)])
    member_main()
    kind, message = load(result)
    assert kind == "user" and "vocab_size 5" in message
    with pytest.raises(UserError, match="vocab_size 5"):  # checked before any process starts
        train_ensemble(corpus, replace(model_cfg, vocab_size=5), train_cfg, 2, progress=False, processes=True)


def test_a_script_without_a_main_guard_trains_its_seeds_side_by_side(words_file, tmp_path):
    """The members are fresh interpreters, not multiprocessing's spawn, which would run the
    caller's script again in each of them."""
    script = tmp_path / "seeds.py"
    script.write_text(f"""import makemore as mm
corpus = mm.load_corpus({str(words_file)!r})
model_cfg, train_cfg = mm.make_configs("lecture", vocab_size=corpus.vocab.size, emb_dim=4, hidden=16, batch_size=8,
                                       steps=40, eval_interval=20)
result = mm.train_ensemble(corpus, model_cfg, train_cfg, 2, {str(tmp_path / "ens")!r}, progress=False, processes=True)
print("trained", result.processes, [r.summary["steps"] for r in result.results])
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["trained 2 [40, 40]"]


def test_a_signal_to_the_ensemble_stops_and_saves_every_member(words_file, tmp_path):
    """kill of the command (not of its members) reaches each member: each stops at a step, saves
    its progress to resume on its own, and the ensemble of what they learnt is written."""
    from test_cli import LONG, _start, _wait_for

    out = tmp_path / "ens"
    proc, err_path = _start(["train", "--data", str(words_file), "--out", str(out), "--seeds", "2", "--threads", "1",
                             *LONG], tmp_path, "ens")
    for name in ("seed-42", "seed-43"):
        _wait_for(out / name / "metrics.csv", rows=2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    err = err_path.read_text()
    assert "Traceback" not in err and "each member's progress is saved" in err
    for name in ("seed-42", "seed-43"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["status"] == "interrupted" and (out / name / "last.safetensors").is_file()
    assert json.loads((out / "ensemble.json").read_text())["members"] == ["seed-42", "seed-43"]


def test_seeds_runs_measures_the_three_ways_and_reports_what_eval_says(tmp_path):
    """scripts/seeds_runs.py: one seed, two side by side, two in turn; its figures are the runs' own."""
    from conftest import load_file, make_words

    seeds_runs = load_file("scripts/seeds_runs.py")
    data = tmp_path / "words.txt"
    data.write_text("\n".join(make_words(2000, seed=5)) + "\n", encoding="utf-8")
    results, runs = tmp_path / "r.json", tmp_path / "runs"
    subprocess.run([sys.executable, "scripts/seeds_runs.py", "--data", str(data), "--budget", "3", "--repeats", "1",
                    "--runs", str(runs), "--results", str(results)], check=True, cwd=seeds_runs.ROOT)
    report = json.loads(results.read_text())
    assert [r["way"] for r in report["runs"]] == list(seeds_runs.WAYS) == list(report["medians"])
    one, apart, in_turn = report["runs"]
    assert len(one["steps"]) == 1 and len(apart["steps"]) == len(in_turn["steps"]) == 2
    assert apart["threads"] == [1, 1] and all(r["peak_mib_per_process"] > 50 for r in report["runs"])
    for row in report["runs"]:
        out = runs / f"words-3-{row['way']}-0"
        done = subprocess.run([sys.executable, "-m", "makemore", "eval", str(out), "--json"], capture_output=True,
                              text=True, check=True)
        assert json.loads(done.stdout)["loss"] == pytest.approx(row["result_dev_loss"], abs=1e-6)
    members = [json.loads((runs / "words-3-side_by_side-0" / f"seed-{s}" / "summary.json").read_text())["dev_loss"]
               for s in (42, 43)]
    assert apart["model_dev_loss"] <= sum(members) / 2 + 1e-9  # the mean of two distributions (Jensen)
