"""The learned interpolation of Kneser-Ney's distributions (interpolation.py): its leave-one-out
counts are the counts without the example, its rows are distributions, it learns, it is kept,
and a budget run on a big enough list mixes with it where it scores better than Kneser-Ney."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_words
from makemore import fit, interpolation, mixture, rundir
from makemore.cli import main
from makemore.counts import NGramCounts, array_columns
from makemore.data import Examples, Vocab, load_corpus
from makemore.interpolation import Gate, InterpolatedCounts, fit_apart
from makemore.baselines import COUNT_MODEL
from makemore.ngram import NGramModel
from makemore.export import load_json
from makemore.runs import load_run

K = 3


def corpus_examples(n: int = 400, seed: int = 0):
    words = make_words(n, seed)
    vocab = Vocab.from_words(words)
    examples = Examples.from_words(words, vocab)
    positions = np.arange(len(examples))
    return vocab, examples.contexts(positions, K).astype(np.int64), examples.targets(positions).astype(np.int64)


def test_leave_one_out_counts_are_the_counts_without_the_example():
    vocab, X, Y = corpus_examples()
    full = InterpolatedCounts(NGramCounts(array_columns(X), Y, vocab.size, K), K)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(Y), 40, replace=False):
        keep = np.arange(len(Y)) != i
        without = InterpolatedCounts(NGramCounts(array_columns(X[keep]), Y[keep], vocab.size, K), K)
        got = full.components(full.counts.context_ids(array_columns(X[i:i + 1]), 1, K), Y[i:i + 1], True)
        want = without.components(without.counts.context_ids(array_columns(X[i:i + 1]), 1, K), Y[i:i + 1])
        for a, b in zip(got, want):
            assert torch.equal(a, b), (i, a, b)


def test_rows_are_distributions_and_score_the_targets():
    vocab, X, Y = corpus_examples()
    model = InterpolatedCounts(NGramCounts(array_columns(X), Y, vocab.size, K), K)
    model.fit(Examples.from_words(make_words(400, 0), vocab), steps=50, batch_size=64)
    _, X_dev, Y_dev = corpus_examples(100, seed=1)
    X_dev[::7] = np.random.default_rng(1).integers(0, vocab.size, (len(X_dev[::7]), K))  # unseen contexts too
    rows = model.probs(X_dev)
    assert rows.shape == (len(X_dev), vocab.size) and (rows > 0).all()
    assert torch.allclose(rows.sum(1), torch.ones(len(X_dev), dtype=torch.float64), atol=1e-6)
    scored = model.target_log_probs(X_dev, Y_dev)
    assert torch.allclose(scored, rows[torch.arange(len(Y_dev)), torch.from_numpy(Y_dev)].log(), atol=1e-5)


def test_training_the_weights_lowers_the_dev_loss_and_beats_kneser_ney():
    words = make_words(3000, 0)
    vocab = Vocab.from_words(words)
    train, dev = Examples.from_words(words, vocab), Examples.from_words(make_words(500, 1), vocab)
    counts = NGramCounts.from_examples(train, vocab.size, 5)
    model = InterpolatedCounts(counts, 5)
    untrained = model.nll(dev)
    model.fit(train, steps=400, batch_size=256)
    kneser_ney = NGramModel(counts, 5)
    kneser_ney.tune(dev)
    assert model.fit_steps == 400
    assert model.nll(dev) < untrained - 0.01
    assert model.nll(dev) < kneser_ney.nll(dev)


def test_training_stops_after_max_passes_over_the_split(monkeypatch):
    """However much time it is given, the gate sees the training split at most MAX_PASSES times
    (on a small split it over-fits beyond): a budget run's learner then frees its core."""
    monkeypatch.setattr(interpolation, "MAX_PASSES", 3)
    words = make_words(400, 0)
    vocab = Vocab.from_words(words)
    train = Examples.from_words(words, vocab)
    model = InterpolatedCounts(NGramCounts.from_examples(train, vocab.size, K), K)
    model.fit(train, seconds=600, batch_size=64)
    assert model.fit_steps == 3 * len(train) // 64
    model.fit(train, steps=10, batch_size=64)  # fewer steps asked than the passes allow: those
    assert model.fit_steps == 3 * len(train) // 64 + 10


def test_the_model_is_kept_and_read_back():
    vocab, X, Y = corpus_examples()
    model = InterpolatedCounts(NGramCounts(array_columns(X), Y, vocab.size, K), K)
    model.fit(Examples.from_words(make_words(400, 0), vocab), steps=20, batch_size=64)
    back = InterpolatedCounts.from_kept(model.kept(), vocab.size, K)
    assert torch.equal(back.target_log_probs(X, Y), model.target_log_probs(X, Y))
    kept = model.kept()
    del kept["raw_counts.1"]
    with pytest.raises(ValueError):
        InterpolatedCounts.from_kept(kept, vocab.size, K)


def test_the_gate_reads_the_context_characters_in_order_and_an_older_gate_loads_as_it_was(monkeypatch):
    words = make_words(400, 0)
    vocab = Vocab.from_words(words)
    examples = Examples.from_words(words, vocab)
    positions = np.arange(len(examples))
    X, Y = examples.contexts(positions, K).astype(np.int64), examples.targets(positions).astype(np.int64)
    counts = NGramCounts(array_columns(X), Y, vocab.size, K)
    small = InterpolatedCounts(counts, K)  # too few examples: it would learn each context's own weights
    assert small.gate.emb_dim == 0 and small.gate.net[0].out_features == interpolation.COUNTS_HIDDEN
    monkeypatch.setattr(interpolation, "CHARS_MIN_EXAMPLES", len(Y))
    model = InterpolatedCounts(counts, K)
    assert model.gate.emb_dim == interpolation.EMB_DIM and model.gate.net[0].out_features == interpolation.HIDDEN
    model.fit(examples, steps=30, batch_size=64)
    with torch.no_grad():  # characters that matter: the two ways of scoring must read the same ones
        model.gate.emb.weight.copy_(torch.randn_like(model.gate.emb.weight))
    model._scored = None
    assert torch.allclose(model.target_log_probs(examples), model.target_log_probs(X, Y), atol=1e-6)
    rows = model.probs(X)  # the contexts as training draws them (Examples.contexts): oldest character first
    assert torch.allclose(rows[torch.arange(len(Y)), torch.from_numpy(Y)].log(), model.target_log_probs(examples),
                          atol=1e-5)

    older = InterpolatedCounts(model.counts, K, Gate(K, hidden=64))  # as saved before the gate read characters
    back = InterpolatedCounts.from_kept(older.kept(), vocab.size, K)
    assert back.gate.emb is None and back.gate.net[0].out_features == 64
    assert torch.equal(back.target_log_probs(X, Y), older.target_log_probs(X, Y))


def test_a_budget_run_on_a_big_list_mixes_with_the_learned_model(words_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mixture, "LEARNED_MIN_EXAMPLES", 0)  # the test list is small
    monkeypatch.setattr(fit, "learns_apart", lambda *args: False)  # trained before the model, in this process
    fitted_learned = []
    original_fit = InterpolatedCounts.fit

    def by_steps(self, train, seconds=None, **kwargs):  # the same model whatever the machine's speed
        fitted_learned.append(seconds)
        return original_fit(self, train, steps=300, batch_size=128)

    monkeypatch.setattr(InterpolatedCounts, "fit", by_steps)
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--budget", "4", "--out", str(out), "--quiet"]) == 0
    assert "learned interpolation" in capsys.readouterr().out
    assert fitted_learned == [pytest.approx(0.4)]  # LEARNED_SHARE of the budget
    mix = json.loads((out / "mix.json").read_text())
    corpus = load_corpus(words_file)
    kneser_ney = mixture.fit_best_order(corpus, mixture.mixing_orders(corpus))
    assert mix["count_model"] == "learned" and mix["ngram_dev_loss"] < kneser_ney.nll(corpus.encoded("dev"))
    assert any(name.startswith("gate.") for name in rundir.read_counts(out, corpus.vocab.size, mix["ngram_context"]))
    result = json.loads((out / "summary.json").read_text())["result"]
    for use, loss in (([], result["dev_loss"]), (["--mix"], mix["mix_dev_loss"])):
        assert main(["eval", str(out), *use, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(loss, abs=1e-5)
    assert main(["sample", str(out), "-n", "5", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.split()) == 5
    (out / "counts.safetensors").unlink()  # the learned weights are in it: one line, not a recount
    assert main(["eval", str(out), "--mix", "--json"]) == 1
    assert "counts.safetensors is missing" in capsys.readouterr().err


def test_mix_trains_the_learned_model_where_asked_on_a_big_list_or_where_the_run_had_it(words_file, tmp_path, capsys,
                                                                                       monkeypatch):
    fitted_learned = []
    original_fit = InterpolatedCounts.fit

    def by_steps(self, train, seconds=None, **kwargs):
        fitted_learned.append(seconds)
        return original_fit(self, train, steps=300, batch_size=128)

    monkeypatch.setattr(InterpolatedCounts, "fit", by_steps)
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--preset", "tiny2d", "--steps", "20", "--out", str(out),
                 "--quiet", "--no-mix"]) == 0
    capsys.readouterr()
    assert main(["mix", str(out), "--json"]) == 0  # a small list: Kneser-Ney, nothing learned
    assert json.loads(capsys.readouterr().out)["count_model"] == COUNT_MODEL and fitted_learned == []
    assert main(["mix", str(out), "--learned", "3", "--ngram-context", "3"]) == 0
    printed = capsys.readouterr()
    assert "learned (k=3)" in printed.out and fitted_learned == [3.0]
    assert "training the learned interpolation of the counts for 3 s" in printed.err  # not a silent minute
    mix = json.loads((out / "mix.json").read_text())
    assert mix["count_model"] == "learned" and mix["ngram_context"] == 3
    # a JSON export holds the learned gate's weights: its counts come from words.json, its gate from nowhere else
    assert main(["export", str(out), "--out", str(tmp_path / "run.json")]) == 0
    exported = json.loads((tmp_path / "run.json").read_text())["count_gate"]
    gate = mixture.kept_count_model(load_run(out), 3, None, "learned").gate.state_dict()
    assert exported.keys() == gate.keys()
    for name, value in gate.items():
        assert exported[name]["shape"] == list(value.shape)
        assert torch.equal(torch.tensor(exported[name]["data"]).reshape(value.shape), value.float())
    assert load_json(tmp_path / "run.json")[0].num_params() == load_run(out).model.num_params()
    capsys.readouterr()
    assert main(["eval", str(out), "--mix", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(mix["mix_dev_loss"], abs=1e-5)
    assert main(["mix", str(out), "--json"]) == 0  # the run's mixture was with it: so again by default
    assert fitted_learned == [3.0, mixture.LEARNED_SECONDS]
    capsys.readouterr()
    assert main(["mix", str(out), "--learned", "0", "--json"]) == 0  # told not to
    assert json.loads(capsys.readouterr().out)["count_model"] == COUNT_MODEL and len(fitted_learned) == 2
    assert main(["mix", str(out), "--json"]) == 0  # now mixed with Kneser-Ney: a small list stays so
    assert json.loads(capsys.readouterr().out)["count_model"] == COUNT_MODEL and len(fitted_learned) == 2
    monkeypatch.setattr(mixture, "LEARNED_MIN_EXAMPLES", 0)  # as on a big list: learned by default
    assert main(["mix", str(out), "--json"]) == 0
    assert fitted_learned == [3.0, mixture.LEARNED_SECONDS, mixture.LEARNED_SECONDS]
    capsys.readouterr()
    monkeypatch.setattr(mixture, "LEARNED_MIN_EXAMPLES", 10**9)  # a small list again
    for corrupted in ("{not json", "[1]"):  # `mix` is how a corrupted mixture is fitted again
        (out / "mix.json").write_text(corrupted)
        assert main(["mix", str(out), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["count_model"] == COUNT_MODEL and len(fitted_learned) == 3
    assert main(["mix", str(out), "--learned", "-1"]) == 1
    assert "--learned must be" in capsys.readouterr().err


def test_a_small_or_labelled_list_or_a_short_budget_keeps_kneser_ney(words_file, tmp_path):
    corpus = load_corpus(words_file)
    assert fit.learning_seconds(corpus, 600, 1.0) is None  # 300 words: below LEARNED_MIN_EXAMPLES
    big = type("Big", (), {"labels": (), "encoded": lambda self, split: range(2_000_000)})()
    assert fit.learning_seconds(big, 600, 7.0) == pytest.approx(60.0)
    assert fit.learning_seconds(big, 3600, 7.0) == fit.LEARNED_MAX_SECONDS
    assert fit.learning_seconds(big, 10, 7.5) is None  # counting leaves no room inside MIX_SHARE


def test_a_list_learns_its_counts_beside_the_model_from_a_smaller_size(words_file, monkeypatch):
    """Beside the model, on a core it leaves idle, the learned count model costs the model no time:
    from LEARNED_BESIDE_MIN_EXAMPLES (names.txt qualifies). Before the model, or by `mix`'s
    default, it would: from LEARNED_MIN_EXAMPLES only."""
    corpus = load_corpus(words_file)
    n = len(corpus.encoded("train"))
    monkeypatch.setattr(fit, "usable_cores", lambda: 2)
    monkeypatch.setattr(mixture, "LEARNED_BESIDE_MIN_EXAMPLES", n)
    monkeypatch.setattr(mixture, "LEARNED_MIN_EXAMPLES", n + 1)
    assert fit.learns_apart(corpus, 1, None) and mixture.learns_counts(corpus, beside=True)
    assert not mixture.learns_counts(corpus) and fit.learning_seconds(corpus, 600, 1.0) is None
    assert not fit.learns_apart(corpus, 2, None)  # two seeds take both cores
    monkeypatch.setattr(fit, "usable_cores", lambda: 1)
    assert not fit.learns_apart(corpus, 1, None)
    monkeypatch.setattr(fit, "usable_cores", lambda: 2)
    monkeypatch.setattr(mixture, "LEARNED_BESIDE_MIN_EXAMPLES", n + 1)
    assert not fit.learns_apart(corpus, 1, None)


@pytest.mark.parametrize("learned", ["3", "0"])
def test_resume_mixes_again_with_the_runs_own_count_model(words_file, tmp_path, capsys, monkeypatch, learned):
    original_fit = InterpolatedCounts.fit
    monkeypatch.setattr(InterpolatedCounts, "fit", lambda self, train, seconds=None, **kw: original_fit(
        self, train, steps=300, batch_size=128))
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--preset", "tiny2d", "--steps", "20", "--out", str(out),
                 "--quiet", "--no-mix"]) == 0
    capsys.readouterr()
    assert main(["mix", str(out), "--learned", learned, "--ngram-context", "3", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["count_model"] == ("learned" if learned != "0" else COUNT_MODEL)
    monkeypatch.setattr(InterpolatedCounts, "fit", lambda *a, **kw: pytest.fail("the kept model is trained again"))
    result = fit.resume(out, steps=40, progress=False)
    after = json.loads((out / "mix.json").read_text())
    assert result.summary["mix"] == after and result.summary["steps"] == 40
    assert (after["count_model"], after["ngram_context"], after["ngram_dev_loss"]) == \
        (before["count_model"], before["ngram_context"], pytest.approx(before["ngram_dev_loss"]))
    assert after["mlp_dev_loss"] != before["mlp_dev_loss"]  # mixed with the model it ends with


def test_the_learner_apart_trains_what_it_would_here_and_a_failure_falls_back_to_kneser_ney(words_file):
    corpus = load_corpus(words_file)
    train, dev = corpus.encoded("train"), corpus.encoded("dev")
    kneser_ney = mixture.fit_best_order(corpus, [2, 3])
    model = InterpolatedCounts(kneser_ney.counts, 3)
    before = copy.deepcopy(model.gate.state_dict())
    apart = fit_apart(model, train, steps=60, seed=5)
    here = InterpolatedCounts(kneser_ney.counts, 3, copy.deepcopy(model.gate))
    with torch.random.fork_rng():
        torch.set_num_threads(1)  # as the learner's process runs: the same sums in the same order
        here.fit(train, steps=60, seed=5)
    there = apart.result()
    assert there.fit_steps == 60 and there.nll(dev) == pytest.approx(here.nll(dev), abs=1e-6)
    for a, b in zip(here.gate.state_dict().values(), there.gate.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(model.gate.state_dict().values(), before.values()))  # left as it was
    notes = []
    broken = fit_apart(model, None, steps=5)  # it cannot train on no split: its process fails
    fallback = mixture.apart_count_model(corpus, broken, kneser_ney.context, kneser_ney.smoothing,
                                         kneser_ney.method, notes.append)
    assert isinstance(fallback, NGramModel) and fallback.nll(dev) == pytest.approx(kneser_ney.nll(dev))
    assert "the learned count model failed" in notes[0] and "\n" not in notes[0]
    slow = fit_apart(model, train, seconds=600)
    slow.cancel()  # its run was interrupted: it stops at once and leaves no files
    assert slow.child.returncode is not None and not Path(slow.folder.name).exists()


def test_a_budget_run_on_two_cores_trains_the_learned_model_beside_the_neural_one(words_file, tmp_path, capsys,
                                                                                monkeypatch):
    monkeypatch.setattr(mixture, "LEARNED_BESIDE_MIN_EXAMPLES", 0)  # the test list is small
    monkeypatch.setattr(fit, "usable_cores", lambda: 2)
    monkeypatch.setattr(InterpolatedCounts, "fit", lambda *a, **kw: pytest.fail("trained in this process"))
    started = []
    original = mixture.learn_apart
    monkeypatch.setattr(mixture, "learn_apart", lambda corpus, kn, seconds: started.append(seconds) or original(
        corpus, kn, seconds))
    threads, train_members = [], fit.train_members
    monkeypatch.setattr(fit, "train_members", lambda *a, **kw: threads.append(torch.get_num_threads()) or train_members(
        *a, **kw))
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--budget", "3", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    mix = json.loads((out / "mix.json").read_text())
    assert started == [pytest.approx(3 - summary["count_seconds"], abs=0.05)]  # all of the model's training time
    corpus = load_corpus(words_file)
    kneser_ney = mixture.fit_best_order(corpus, mixture.mixing_orders(corpus)).nll(corpus.encoded("dev"))
    if mix["count_model"] == "learned":  # the better of the two on dev: on this tiny list, either
        assert mix["learned_apart"] and mix["learned_steps"] > 0 and mix["ngram_dev_loss"] < kneser_ney
        assert "steps beside the model" in printed
    else:
        assert mix["ngram_dev_loss"] == pytest.approx(kneser_ney)
    assert threads == [1]  # the model's step had the other core; the learner had its own
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(summary["result"]["dev_loss"], abs=1e-5)


def test_ngram_shows_the_learned_model_beside_kneser_ney(words_file, tmp_path, capsys):
    assert main(["ngram", "--data", str(words_file), "--max-context", "3", "--learned", "1", "--test", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    learned, table = out["learned"], out["ngram"]
    assert learned["context"] == 3 == table[-1]["context"] and learned["steps"] > 0
    assert 0 < learned["dev_loss"] < table[0]["kneser_ney"]["dev_loss"]  # better than a bigram, whatever it learned
    assert learned["test_loss"] > 0
    # the seconds reported are the training's: in a fresh process torch's first optimizer takes a second more
    # (on enough words that 60 passes take longer than the second asked for)
    more = tmp_path / "more.txt"
    more.write_text("\n".join(make_words(3000, seed=2)))
    fresh = subprocess.run([sys.executable, "-m", "makemore", "ngram", "--data", str(more), "--max-context", "3",
                            "--learned", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert 1.0 <= json.loads(fresh.stdout)["learned"]["seconds"] < 1.4, fresh.stderr
    assert main(["ngram", "--data", str(words_file), "--max-context", "3", "--learned", "1"]) == 0
    assert "learned interpolation of the 3-character counts: dev" in capsys.readouterr().out
    for bad in ("0", "-1", "nan"):
        assert main(["ngram", "--data", str(words_file), "--learned", bad]) == 1
        assert "--learned must be a positive number" in capsys.readouterr().err
    labelled = tmp_path / "two.txt"
    labelled.write_text("".join(f"{'AB'[i % 2]}\t{word}\n" for i, word in enumerate(make_words(200, 0))))
    assert main(["ngram", "--data", str(labelled), "--labels", "--learned", "1"]) == 1
    assert "unlabelled list" in capsys.readouterr().err


def test_a_split_scored_twice_is_read_once_until_the_gate_trains_again(monkeypatch):
    words = make_words(400, 0)
    vocab = Vocab.from_words(words)
    train, dev = Examples.from_words(words, vocab), Examples.from_words(make_words(100, 1), vocab)
    model = InterpolatedCounts(NGramCounts.from_examples(train, vocab.size, K), K).fit(train, steps=20)
    calls, components = [], model.components
    monkeypatch.setattr(model, "components", lambda *a, **kw: calls.append(1) or components(*a, **kw))
    first = model.target_log_probs(dev)
    again = model.target_log_probs(Examples.from_words(make_words(100, 1), vocab))  # the same split, rebuilt
    assert torch.equal(first, again) and len(calls) == 1
    model.target_log_probs(Examples.from_words(make_words(100, 2), vocab))  # another split: scored
    assert len(calls) == 2
    model.fit(train, steps=20)  # trained again: the same split is scored again
    calls.clear()
    model.target_log_probs(Examples.from_words(make_words(100, 2), vocab))
    assert len(calls) == 1
