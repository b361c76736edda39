"""Labels (--labels): parsing, the stratified split, every model conditioned on the label,
sampling and scoring by label, classification by Bayes' rule, checkpoints, count models."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import makemore as mm
from makemore import models
from makemore.cli import main
from makemore.data import Examples, load_corpus, split_labelled
from makemore.errors import UserError
from makemore.labels import (LabelledNGram, classify, given_label, label_prior, one_label, posterior,
                             word_log_likelihoods)
from makemore.mixture import run_predictor
from makemore.ngram import NGramModel, ngram_predictor
from makemore.predict import model_predictor, split_nll
from makemore.runs import load_run

A_LETTERS, B_LETTERS = "abcde", "vwxyz"


def write_two_labels(path, a: int = 240, b: int = 60, seed: int = 0):
    """Two lists with disjoint alphabets: label A's words of a-e, label B's of v-z."""
    rng = random.Random(seed)
    lines = [f"A\t{''.join(rng.choice(A_LETTERS) for _ in range(rng.randint(3, 7)))}" for _ in range(a)]
    lines += [f"B\t{''.join(rng.choice(B_LETTERS) for _ in range(rng.randint(3, 7)))}" for _ in range(b)]
    rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return write_two_labels(tmp_path_factory.mktemp("labels") / "two.txt")


@pytest.fixture(scope="module")
def labelled_run(two, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "labelled"
    corpus = load_corpus(two, labels=True)
    mm.train(corpus, model="mlp", out=out, steps=1500, batch_size=64, block_size=3, emb_dim=8, hidden=64,
             lr=0.01, optimizer="adamw", schedule="cosine", progress=False, note=lambda s: None)
    return out


# ----------------------------------------------------------------------------------------
# Reading and splitting


@pytest.mark.parametrize("text, line, what", [
    ("A\tabc\nno tab here\n", 2, "no tab"),
    ("A\tabc\n\tabc\n", 2, "empty label"),
    ("A\tabc\n\nB\t  \n", 3, "empty item"),
    ("A\tabc\nB\tanna\tmaria\n", 2, "2 tabs"),
])
def test_bad_lines_are_one_error_naming_the_line(tmp_path, capsys, text, line, what):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=f"line {line}: .*{what.split()[-1]}"):
        load_corpus(path, labels=True)
    assert main(["data", "--data", str(path), "--labels"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"line {line}" in err[0] and "Traceback" not in err[0]


def test_a_label_too_small_to_split_is_one_error(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text("".join(f"A\tw{i}\n" for i in range(30)) + "".join(f"B\tv{i}\n" for i in range(4)))
    with pytest.raises(UserError, match="label 'B' has 4 line"):
        load_corpus(path, labels=True)


def test_split_is_stratified_80_10_10_per_label(two):
    corpus = load_corpus(two, labels=True)
    counts = corpus.stats(3)["labels"]
    assert counts == {"A": {"train": 192, "dev": 24, "test": 24}, "B": {"train": 48, "dev": 6, "test": 6}}
    # every line is in exactly one split, and the split is reproducible
    lines = two.read_text().split()
    assert sorted(w for s in ("train", "dev", "test") for w in corpus.splits[s]) == sorted(
        line.replace(" ", "\t") for line in two.read_text().strip().split("\n"))
    assert split_labelled(corpus.words, 42) == split_labelled(corpus.words, 42)
    assert lines


def test_vocabulary_and_contexts_carry_the_label(two):
    corpus = load_corpus(two, labels=True)
    assert corpus.labels == ("A", "B")
    assert set(corpus.vocab.chars[1:]) == set(A_LETTERS + B_LETTERS)  # no tab, no label characters
    train = corpus.encoded("train")
    ctx = train.contexts(np.arange(len(train)), 3)
    assert ctx.shape == (len(train), 4)
    words = corpus.splits["train"]
    # column 0 of each example is its word's label
    lengths = np.diff(np.append(train.starts, len(train)))
    assert np.array_equal(ctx[:, 0], np.repeat(corpus.vocab.label_ids(words), lengths))


def test_data_shows_the_labels_per_split(two, capsys):
    assert main(["data", "--data", str(two), "--labels"]) == 0
    out = capsys.readouterr().out
    assert "labels        2" in out and "A" in out and "192" in out


# ----------------------------------------------------------------------------------------
# Every model


@pytest.mark.parametrize("name", [*models.MODULES, "gru-state", "rnn-state"])
def test_every_model_trains_and_samples_with_labels(two, tmp_path, name):
    corpus = load_corpus(two, labels=True)
    settings = {"block_size": 4} if name == "wavenet" else {}
    if name.endswith("-state"):  # a recurrent model's label as its start state
        name, settings = name[:-len("-state")], {"label_at": "state"}
    result = mm.train(corpus, model=name, steps=120, batch_size=32, progress=False, note=lambda s: None,
                      out=tmp_path / name, **settings)
    assert result.model.cfg.labels == 2
    run = load_run(tmp_path / name)
    predictor = model_predictor(run.model)
    # the predictor's distribution of each example is the model's own, given the label
    X, Y = corpus.encoded("dev").tensors(run.model.cfg.block_size)
    with torch.no_grad():
        direct = torch.log_softmax(run.model(X)[0].float(), dim=-1)
    assert torch.allclose(predictor(X), direct, atol=1e-4)
    # the label changes the prediction
    assert not torch.allclose(given_label(predictor, 0)(X[:, 1:]), given_label(predictor, 1)(X[:, 1:]))
    samples = mm.sample(given_label(predictor, 1), run.vocab.items, 5, seed=0)
    assert len(samples) == 5


def test_an_unlabelled_model_is_unchanged_by_the_feature():
    """A model of unlabelled data holds no label table (the weights it draws are those it drew
    before labels existed: test_models' reference losses); a labelled one holds one more."""
    for name in models.MODULES:
        block = 1 if name == "bigram" else 4
        plain = dict(models.build(models.config_class(name)(vocab_size=27, block_size=block)).named_parameters())
        assert not any("label" in n for n in plain)
        labelled = dict(models.build(models.config_class(name)(vocab_size=27, block_size=block, labels=3))
                        .named_parameters())
        if name == "mlp":  # the labels are three more rows of C, read as one more input by W1
            assert labelled["C"].shape == (30, plain["C"].shape[1])
            assert labelled["W1"].shape[0] == plain["W1"].shape[0] + plain["C"].shape[1]
        else:
            assert set(labelled) > set(plain)


# ----------------------------------------------------------------------------------------
# Sampling, scoring, classifying


def test_sample_by_label_uses_that_labels_letters(labelled_run, capsys):
    for label, letters in (("B", B_LETTERS), ("A", A_LETTERS)):
        # a small model leaves ~1% on the other alphabet after 1,500 steps; temperature 0.5 squares it away
        assert main(["sample", str(labelled_run), "--label", label, "-n", "200", "--seed", "1", "--neural",
                     "--temperature", "0.5"]) == 0
        words = capsys.readouterr().out.split()
        assert len(words) == 200
        chars = "".join(words)
        assert sum(c in letters for c in chars) / len(chars) > 0.995


def test_sample_without_label_draws_labels_by_frequency_and_tags_them(labelled_run, capsys):
    assert main(["sample", str(labelled_run), "-n", "400", "--seed", "3", "--neural"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 400 and all("\t" in line for line in lines)
    labels = [line.split("\t")[0] for line in lines]
    assert 0.65 < labels.count("A") / 400 < 0.95  # 80% of the training split is A
    # the same seed, the same lines
    assert main(["sample", str(labelled_run), "-n", "400", "--seed", "3", "--neural"]) == 0
    assert capsys.readouterr().out.strip().split("\n") == lines


def test_without_label_a_smaller_n_gives_the_first_lines_of_a_larger_one(labelled_run, capsys):
    """As --seed promises: sample i's label and item depend on the seed and i alone (each label's
    count drawn first and the lines shuffled together gave the same lines in other orders)."""
    outputs = []
    for n in (3, 5, 300):
        assert main(["sample", str(labelled_run), "-n", str(n), "--seed", "1", "--neural"]) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    assert outputs[0] == outputs[1][:3] and outputs[1] == outputs[2][:5] and len(outputs[2]) == 300


def test_exclude_reads_labelled_lines_and_bare_items(labelled_run, capsys, tmp_path):
    """--exclude FILE of a labelled run: a line LABEL<TAB>ITEM (as sample writes them) leaves ITEM
    out under LABEL only, a bare item under every label; the rest are the same seed's lines."""
    run = str(labelled_run)
    assert main(["sample", run, "-n", "300", "--seed", "2", "--neural"]) == 0
    plain = capsys.readouterr().out.splitlines()
    a_lines = list(dict.fromkeys(line for line in plain if line.startswith("A\t")))[:3]
    b_items = list(dict.fromkeys(line.split("\t")[1] for line in plain if line.startswith("B\t")))[:2]
    exclude = tmp_path / "taken.txt"
    exclude.write_text("\n".join(a_lines + b_items + ["B\t" + a_lines[0].split("\t")[1]]) + "\n")
    gone = set(a_lines) | {f"{label}\t{item}" for item in b_items for label in "AB"}
    assert main(["sample", run, "-n", "100", "--seed", "2", "--neural", "--exclude", str(exclude)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 100 and not gone & set(lines)
    by_label = {label: [line for line in plain if line.startswith(label + "\t") and line not in gone]
                for label in "AB"}
    for label in "AB":  # each label's lines are its own stream's, less the excluded ones
        mine = [line for line in lines if line.startswith(label + "\t")]
        assert mine == by_label[label][:len(mine)]
    assert main(["sample", run, "--label", "A", "-n", "50", "--seed", "2", "--neural", "--exclude", str(exclude)]) == 0
    items = capsys.readouterr().out.splitlines()
    assert len(items) == 50 and not {line.split("\t")[1] for line in a_lines} & set(items)
    exclude.write_text("C\tabc\n")
    assert main(["sample", run, "-n", "5", "--exclude", str(exclude)]) == 1
    assert "label 'C', which the run does not have" in capsys.readouterr().err
    exclude.write_text("A\tabc\tabc\n")  # as a training file's line, one with two tabs is refused
    assert main(["sample", run, "-n", "5", "--exclude", str(exclude)]) == 1
    assert "that is not LABEL<TAB>ITEM (one tab" in capsys.readouterr().err


def test_a_labelled_predictor_is_refused_by_sample_and_score_until_given_a_label(labelled_run):
    """Characters alone given to a labelled predictor would be read as a label and its
    characters: sample and score refuse it, and one_label's predictor works."""
    run = load_run(labelled_run)
    predictor = model_predictor(run.model)
    for use in (lambda: mm.sample(predictor, run.vocab, n=3, seed=1),
                lambda: mm.sample_tagged(predictor, run.vocab, run.splits, n=3, seed=1),
                lambda: mm.score(predictor, run.vocab, ["abc"])):
        with pytest.raises(UserError, match="reads a label .* labels.one_label"):
            use()
    label = run.vocab.labels[0]
    one, items, _ = one_label(predictor, run.vocab, None, label)
    assert len(mm.sample(one, items, n=3, seed=1)) == 3


def test_unknown_label_is_one_line_listing_the_known_ones(labelled_run, capsys):
    for argv in (["sample", str(labelled_run), "--label", "C"], ["score", str(labelled_run), "--label", "C", "abc"]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "'C'" in err and "A, B" in err


def test_score_given_a_label(labelled_run, capsys):
    assert main(["score", str(labelled_run), "--label", "A", "abcd", "vwxy", "--json", "--neural"]) == 0
    a, v = json.loads(capsys.readouterr().out)
    assert a["nll_per_char"] < v["nll_per_char"] - 1.0
    assert main(["score", str(labelled_run), "abcd"]) == 1  # a labelled run needs --label
    assert "--label" in capsys.readouterr().err


def test_classify_is_right_on_held_out_words(labelled_run, capsys):
    run = load_run(labelled_run)
    dev = run.splits["dev"]
    words = [line.split("\t")[1] for line in dev]
    assert main(["classify", str(labelled_run), *words, "--json", "--neural"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["word"] for r in results] == words  # in the order given
    for r, line in zip(results, dev):
        probs = [x["prob"] for x in r["labels"]]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-9
        assert r["labels"][0]["label"] == line.split("\t")[0]
    assert main(["eval", str(labelled_run), "--json", "--neural"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0


def test_classify_takes_a_file_and_refuses_unlabelled_runs(labelled_run, tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("abc\nxyz\n")
    assert main(["classify", str(labelled_run), "--file", str(words)]) == 0
    out = capsys.readouterr().out.strip().split("\n")
    assert out[0].split()[:2] == ["abc", "A"] and out[1].split()[:2] == ["xyz", "B"]
    words.write_text("abc\n\nxyz\nab\u65e5\n")  # in a long file, which word the model cannot read
    assert main(["classify", str(labelled_run), "--file", str(words)]) == 1
    assert capsys.readouterr().err.startswith(f"makemore: error: line 4 of {words}: ")
    plain = tmp_path / "plain"
    corpus = load_corpus(write_two_labels(tmp_path / "p.txt"))  # read without --labels: lines with tabs
    mm.train(corpus, model="bigram", steps=5, out=plain, progress=False, note=lambda s: None)
    assert main(["classify", str(plain), "abc"]) == 1
    assert "without labels" in capsys.readouterr().err


def test_posterior_is_bayes_rule(labelled_run):
    """P(label | word) = P(word | label) P(label) / sum over labels, from the model's own
    word likelihoods, computed here by hand from the sampler's per-character distributions."""
    run = load_run(labelled_run)
    predictor = model_predictor(run.model)
    prior = label_prior(run.vocab, run.splits["train"])
    assert np.allclose(prior, [0.8, 0.2])
    items = ["abca", "vzx", "aveb"]
    ll = word_log_likelihoods(predictor, run.vocab, items)
    for j, item in enumerate(items):
        for label in range(2):
            examples = Examples.from_words([item], run.vocab.items)
            X, Y = examples.tensors(3)
            logp = given_label(predictor, label)(X).gather(1, Y[:, None]).sum().item()
            assert ll[j, label] == pytest.approx(logp, abs=1e-4)
    post = posterior(predictor, run.vocab, prior, items)
    joint = np.exp(ll) * prior
    assert np.allclose(post, joint / joint.sum(axis=1, keepdims=True), atol=1e-9)
    assert classify(predictor, run.vocab, prior, ["abca"])[0]["labels"][0]["label"] == "A"


# ----------------------------------------------------------------------------------------
# Checkpoints, resume, mixtures, count models


def test_checkpoint_round_trip_keeps_the_labels(labelled_run, tmp_path):
    run = load_run(labelled_run)
    assert run.vocab.labels == ("A", "B") and run.model_cfg.labels == 2
    corpus = run.corpus()
    dev = corpus.encoded("dev")
    before = split_nll(model_predictor(run.model), dev)
    again = load_run(labelled_run)
    assert split_nll(model_predictor(again.model), dev) == pytest.approx(before, abs=1e-9)
    assert dev.labels is not None


def test_resume_a_labelled_run(two, tmp_path):
    corpus = load_corpus(two, labels=True)
    out = tmp_path / "run"
    mm.train(corpus, model="mlp", steps=60, out=out, progress=False, note=lambda s: None, hidden=32, batch_size=32)
    assert main(["train", "--resume", str(out), "--steps", "120"]) == 0
    assert load_run(out).model_cfg.labels == 2


def test_labelled_count_model_beats_the_all_labels_one_and_is_normalised(two):
    corpus = load_corpus(two, labels=True)
    train, dev = corpus.encoded("train"), corpus.encoded("dev")
    labelled = LabelledNGram.fit(train, dev, 3, corpus.vocab.size, 2)
    whole = NGramModel.from_examples(train, 3, corpus.vocab.size)
    whole.tune(dev)
    assert labelled.nll(dev) < whole.nll(dev) - 0.05  # the first letter of a word: the label knows its alphabet
    ctx = dev.contexts(np.arange(len(dev)), 3)
    probs = labelled.probs(ctx)
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(dev)), atol=1e-5)
    # its predictor's log-probabilities of the targets are its own target_log_probs
    pred = ngram_predictor(labelled)
    X, Y = dev.tensors(3)
    assert torch.allclose(pred(X).gather(1, Y[:, None]).squeeze(1).double(), labelled.target_log_probs(dev),
                          atol=1e-4)


def test_ngram_shows_the_count_model_conditioned_on_the_label_beside_the_pooled_ones(two, capsys):
    assert main(["ngram", "--data", str(two), "--labels", "--max-context", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    corpus = load_corpus(two, labels=True)
    labelled = LabelledNGram.fit(corpus.encoded("train"), corpus.encoded("dev"), 3, corpus.vocab.size, 2)
    assert rows[2]["per_label"]["dev_loss"] == pytest.approx(labelled.nll(corpus.encoded("dev")), abs=1e-9)
    assert rows[2]["per_label"]["dev_loss"] < rows[2]["kneser_ney"]["dev_loss"] - 0.05  # the pooled columns
    assert main(["ngram", "--data", str(two), "--labels", "--max-context", "2"]) == 0
    assert "KN per label" in capsys.readouterr().out


def test_mixture_and_budget_run_with_labels(two, tmp_path, capsys):
    out = tmp_path / "budget"
    assert main(["train", "--data", str(two), "--labels", "--budget", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert "mix" in summary and isinstance(summary["mix"]["discount"], dict)
    run = mm.load_any(out) if hasattr(mm, "load_any") else load_run(out)
    predictor = run_predictor(run)  # rebuilt from mix.json: per-label Kneser-Ney
    assert predictor.labels == 2
    assert main(["eval", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loss"] == pytest.approx(summary["result"]["dev_loss"], abs=1e-6)


def test_seed_ensemble_with_labels(two, tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(["train", "--data", str(two), "--labels", "--model", "bigram", "--steps", "50", "--seeds", "2",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["classify", str(out), "abc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["labels"][0]["label"] == "A"


def test_export_refuses_labelled_runs_but_json(labelled_run, tmp_path, capsys):
    assert main(["export", str(labelled_run), "--neural", "--format", "html", "--out", str(tmp_path / "x.html")]) == 1
    assert "--labels" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
    assert main(["export", str(labelled_run), "--format", "json", "--out", str(tmp_path / "x.json")]) == 0
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["vocab"]["labels"] == ["A", "B"]


def test_tune_a_labelled_list(two, tmp_path, capsys):
    pytest.importorskip("optuna")
    out = tmp_path / "study"
    assert main(["tune", "--data", str(two), "--labels", "--trials", "2", "--steps", "40", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "--labels" in text  # the command that trains the best trial again reads the labels too
    trial = next(out.glob("trial-*"))
    assert load_run(trial).model_cfg.labels == 2


def test_split_nll_refuses_examples_a_predictor_cannot_read(two, labelled_run, words_file):
    """A labelled predictor given unlabelled examples, an unlabelled one given a labelled list's,
    or examples of a larger vocabulary: one UserError (an index error deep in the model, or a
    silent figure)."""
    run = load_run(labelled_run)
    labelled = model_predictor(run.model)
    plain_corpus = load_corpus(words_file)
    plain = mm.model_predictor(mm.MLP(mm.make_configs("tiny2d", vocab_size=plain_corpus.vocab.size)[0]))
    with pytest.raises(UserError, match="reads a label"):
        split_nll(labelled, plain_corpus.encoded("dev"))
    with pytest.raises(UserError, match="reads no label"):
        split_nll(plain, load_corpus(two, labels=True).encoded("dev"))
    small = mm.model_predictor(mm.MLP(mm.make_configs("tiny2d", vocab_size=3)[0]))
    sizes = f"a vocabulary of {plain_corpus.vocab.size} symbols and the predictor predicts 3"
    with pytest.raises(UserError, match=sizes):
        split_nll(small, plain_corpus.encoded("dev"))
    assert split_nll(labelled, load_corpus(two, labels=True).encoded("dev")) > 0
