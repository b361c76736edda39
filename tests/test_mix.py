"""Bengio's mixture of the MLP with a Kneser-Ney model, and the ngram/mix commands."""

import json
import shutil

import pytest
import torch

from makemore.cli import main
from makemore.config import make_configs
from makemore.data import load_corpus
from makemore.data import Examples
from makemore.mixture import fit_mixture, mixture_predictor
from makemore.ngram import NGramModel, ngram_predictor
from makemore.predict import target_log_probs


def _target_log_probs(predictor, words, vocab):
    return target_log_probs(predictor, Examples.from_words(words, vocab))
from makemore.predict import model_predictor as mlp_predictor
from makemore.fit import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import make_words

    path = tmp_path_factory.mktemp("mix") / "words.txt"
    path.write_text("\n".join(make_words(400)))
    corpus = load_corpus(path)
    cfgs = make_configs("lecture", vocab_size=corpus.vocab.size, emb_dim=6, hidden=24, steps=300,
                        batch_size=32, engine="autograd")
    out = path.parent / "run"
    return corpus, train(corpus, *cfgs, out=out, progress=False), out


def test_weights_zero_and_one_reproduce_each_model(trained):
    corpus, result, _ = trained
    mlp = mlp_predictor(result.model)
    ngram = NGramModel.from_words(corpus.splits["train"], corpus.vocab, 4, "kneser_ney", 0.8)
    dev = corpus.splits["dev"]
    X, Y = corpus.examples("dev", 4)
    only_mlp = -_target_log_probs(mixture_predictor(mlp, ngram_predictor(ngram), 1.0), dev, corpus.vocab).mean()
    only_ngram = -_target_log_probs(mixture_predictor(mlp, ngram_predictor(ngram), 0.0), dev, corpus.vocab).mean()
    assert float(only_mlp) == pytest.approx(result.summary["dev_loss"], abs=1e-5)
    assert float(only_ngram) == pytest.approx(ngram.nll(X, Y), abs=1e-5)
    # the target-only path the mixture is tuned with gives the predictor's log-probs
    by_predictor = _target_log_probs(ngram_predictor(ngram), dev, corpus.vocab)
    torch.testing.assert_close(ngram.target_log_probs(X, Y), by_predictor, atol=1e-5, rtol=0)
    assert float(-ngram.target_log_probs(X, Y).mean()) == pytest.approx(ngram.nll(X, Y), rel=1e-12)


def test_tuned_mixture_is_no_worse_than_either(trained):
    corpus, result, _ = trained
    _, r = fit_mixture(mlp_predictor(result.model), corpus.splits["train"], corpus.splits["dev"], corpus.vocab, 3)
    assert 0.0 <= r["weight"] <= 1.0
    assert r["mix_dev_loss"] <= min(r["mlp_dev_loss"], r["ngram_dev_loss"]) + 1e-9


def test_mix_command_and_mixed_sampling(trained, capsys):
    _, _, run = trained
    assert main(["sample", str(run), "--mix"]) == 1  # no mixture fitted yet
    assert "makemore mix" in capsys.readouterr().err
    assert main(["mix", str(run), "--ngram-context", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"mlp_dev_loss", "ngram_dev_loss", "mix_dev_loss", "weight"} <= set(result)
    assert json.loads((run / "mix.json").read_text())["weight"] == result["weight"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["mix"] == result and "dev_loss" in summary  # the run's record says what mixing gave
    assert main(["sample", str(run), "--mix", "-n", "5", "--seed", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
    assert main(["score", str(run), "--mix", "mana", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["nll"] > 0


def test_ngram_command_json(trained, capsys):
    corpus, _, run = trained
    assert main(["ngram", "--data", corpus.source, "--max-context", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["context"] for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {"context", "table_entries", "unseen_dev_contexts", "add_alpha", "kneser_ney",
                            "modified_kneser_ney"}
    assert main(["ngram", "--data", corpus.source, "--max-context", "2", "--compare", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mlp"]["params"] == 24 * 3 * 6 + 24 + 24 * corpus.vocab.size + corpus.vocab.size + 6 * corpus.vocab.size


@pytest.fixture(scope="module")
def many_chars_file(tmp_path_factory):
    """Words over ~3,000 distinct characters: base-V keys of 7-grams would overflow int64."""
    import random

    rng = random.Random(0)
    alphabet = [chr(0x4E00 + i) for i in range(5000)]
    path = tmp_path_factory.mktemp("many") / "words.txt"
    path.write_text("\n".join("".join(rng.choices(alphabet, k=rng.randint(1, 6))) for _ in range(1500)),
                    encoding="utf-8")
    return path


def test_ngram_command_on_a_vocabulary_of_thousands(many_chars_file, capsys):
    V = load_corpus(many_chars_file).vocab.size
    assert V > 2500 and V ** 7 > 2**63
    assert main(["ngram", "--data", str(many_chars_file), "--max-context", "6", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["context"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["table_entries"] for r in rows] == [V ** (k + 1) for k in range(1, 7)]
    assert all(0 < r["kneser_ney"]["dev_loss"] < 20 for r in rows)
    assert main(["ngram", "--data", str(many_chars_file), "--max-context", "6"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert f"{V ** 2:,}" in table[1] and f"{float(V ** 7):.1e}" in table[6]


def test_an_ensemble_says_which_members_results_were_mixtures(trained, tmp_path, capsys):
    """An ensemble averages its members' neural models: a member whose result was its mixture
    (or its count model) is named, with what joins and how to mix the ensemble."""
    _, _, run = trained
    mixed, plain = tmp_path / "mixed", tmp_path / "plain"
    shutil.copytree(run, mixed, ignore=shutil.ignore_patterns("mix.json", "counts.safetensors"))
    shutil.copytree(run, plain, ignore=shutil.ignore_patterns("mix.json", "counts.safetensors"))
    assert main(["mix", str(mixed), "--ngram-context", "3", "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["result"] in ("mixture", "ngram")
    ens = tmp_path / "ens"
    assert main(["ensemble", str(mixed), str(plain), "--out", str(ens)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: mixed's result is its")
    assert f"{fitted['mix_dev_loss' if fitted['result'] == 'mixture' else 'ngram_dev_loss']:.4f}" in notes[0]
    assert f"makemore mix {ens}" in notes[0]


def test_ngram_command_says_what_it_cannot_count(many_chars_file, monkeypatch, capsys):
    import makemore.counts

    monkeypatch.setattr(makemore.counts, "available_memory", lambda: 2**20)
    assert main(["ngram", "--data", str(many_chars_file), "--max-context", "12"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use a shorter context" in err and "Traceback" not in err


def test_ensemble_of_different_models(trained, tmp_path, capsys):
    """`makemore ensemble` joins runs of different models into one: its dev loss is the mean of
    their probabilities, and every command takes it as one run (eval, mix, eval --mix)."""
    corpus, result, run = trained
    gru = tmp_path / "gru"
    assert main(["train", "--data", corpus.source, "--model", "gru", "--steps", "60", "--emb-dim", "8",
                 "--hidden", "16", "--quiet", "--out", str(gru)]) == 0
    capsys.readouterr()
    ens = tmp_path / "ens"
    assert main(["ensemble", str(run), str(gru), "--out", str(ens), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    members = out["member_dev_loss"]
    assert members["run"] == pytest.approx(result.summary["dev_loss"], abs=1e-6)
    # weights fitted on dev: never worse than the best member alone nor than equal weights
    assert sum(out["weights"].values()) == pytest.approx(1.0)
    assert out["dev_loss"] <= min(members.values()) + 1e-9
    assert main(["ensemble", str(run), str(gru), "--out", str(tmp_path / "equal"), "--equal", "--json"]) == 0
    equal = json.loads(capsys.readouterr().out)
    assert equal["weights"] == {"run": 0.5, "gru": 0.5}
    assert out["dev_loss"] <= equal["dev_loss"] + 1e-9 and equal["dev_loss"] <= max(members.values())
    assert not (ens / "run" / "last.safetensors").exists() and (ens / "gru" / "best.safetensors").is_file()
    assert main(["eval", str(ens), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(out["dev_loss"], abs=1e-9)
    assert main(["mix", str(ens), "--ngram-context", "3", "--json"]) == 0
    mixed = json.loads(capsys.readouterr().out)["mix_dev_loss"]
    assert main(["eval", str(ens), "--mix", "--json"]) == 0
    result_mix = json.loads(capsys.readouterr().out)
    assert result_mix["mix"] is True and result_mix["loss"] == pytest.approx(mixed, abs=1e-6)
    # refused: an existing --out, a single run, runs of other data
    assert main(["ensemble", str(run), str(gru), "--out", str(ens)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["ensemble", str(run), "--out", str(tmp_path / "one")]) == 1
    other = tmp_path / "other.txt"
    other.write_text("\n".join(corpus.splits["train"][:200]))
    assert main(["train", "--data", str(other), "--model", "bigram", "--steps", "5", "--quiet",
                 "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    assert main(["ensemble", str(run), str(tmp_path / "other"), "--out", str(tmp_path / "bad")]) == 1
    assert "other data" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.*"))


def test_ngram_test_losses_use_the_dev_tuned_settings(trained, capsys):
    corpus, _, _ = trained
    assert main(["ngram", "--data", corpus.source, "--max-context", "3", "--test", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for k, row in enumerate(rows, start=1):
        model = NGramModel.from_words(corpus.splits["train"], corpus.vocab, k, "kneser_ney",
                                      row["kneser_ney"]["discount"])
        X, Y = corpus.examples("test", k)
        assert row["kneser_ney"]["test_loss"] == pytest.approx(model.nll(X, Y), rel=1e-9)
        modified = NGramModel.from_words(corpus.splits["train"], corpus.vocab, k, "modified_kneser_ney",
                                         row["modified_kneser_ney"]["discounts"])
        assert row["modified_kneser_ney"]["test_loss"] == pytest.approx(modified.nll(X, Y), rel=1e-9)
        assert row["add_alpha"]["test_loss"] > 0


def test_fitted_ensemble_weights_maximise_the_likelihood():
    """EM's weights against a brute-force search over the simplex of three members."""
    from makemore.predict import fit_ensemble_weights

    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(3, 400, 5, generator=g), dim=-1)[:, :, 0]  # (K, N) log p(target)

    def ll(w):
        return torch.logsumexp(logp + torch.tensor(w).log()[:, None], dim=0).mean().item()

    fitted = fit_ensemble_weights(logp)
    grid = [(a / 50, b / 50, 1 - a / 50 - b / 50) for a in range(1, 50) for b in range(1, 50 - a)]
    assert ll(fitted) >= max(ll(w) for w in grid) - 1e-9
    assert sum(fitted) == pytest.approx(1.0) and min(fitted) >= 0


def test_scoring_targets_alone_gives_the_full_distributions_numbers(trained):
    """The count model, the mixture and an ensemble score a split by each target's probability
    alone (no V-wide rows): the same numbers as reading them off the whole distributions."""
    from makemore.predict import ensemble_predictor

    corpus, result, _ = trained
    ngram = NGramModel.from_words(corpus.splits["train"], corpus.vocab, 4, "kneser_ney", 0.8)
    examples = Examples.from_words(corpus.splits["dev"][:50], corpus.vocab)
    predictors = [ngram_predictor(ngram), mixture_predictor(mlp_predictor(result.model), ngram_predictor(ngram), 0.3),
                  ensemble_predictor([result.model, result.model], [0.25, 0.75])]
    for predictor in predictors:
        assert hasattr(predictor, "target_log_probs")
        X, Y = examples.tensors(predictor.context_size)
        whole = predictor(X).gather(1, Y[:, None]).squeeze(1)
        torch.testing.assert_close(predictor.target_log_probs(X, Y), whole, atol=1e-5, rtol=1e-5)


def test_mix_without_a_context_takes_the_order_a_budget_run_would(trained, capsys):
    """`makemore mix RUN` counts 5 to 7 characters and keeps the order that scores best on dev,
    as a budget run does (mixture.mixing_model), as the Python API's attach does; its line says
    which."""
    from makemore.mixture import attach, mixing_model
    from makemore.runs import load_run

    corpus, _, run = trained
    expected = mixing_model(load_run(run).corpus())
    assert main(["mix", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ngram_context"] == expected.context and result["ngram_dev_loss"] == pytest.approx(
        expected.nll(corpus.encoded("dev")))
    assert main(["mix", str(run)]) == 0
    assert f"Kneser-Ney (k={expected.context})" in capsys.readouterr().out
    assert attach(load_run(run))["ngram_context"] == expected.context


def test_a_mixed_run_keeps_its_counts_and_uses_them_as_counted(trained, tmp_path, capsys):
    """`makemore mix` keeps the Kneser-Ney counts beside mix.json; a run read back predicts with
    them exactly as with counts made afresh, rejects a corrupted file in one line, and counts
    again where the kept ones are for another order (mixed again since) or missing."""
    import shutil

    from makemore import rundir
    from makemore.mixture import kept_count_model
    from makemore.runs import load_run

    corpus, _, trained_run = trained
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["mix", str(run), "--ngram-context", "4", "--json"]) == 0
    mixed = json.loads(capsys.readouterr().out)
    discount = mixed["discount"]
    assert mixed["count_model"] == "kneser_ney" and isinstance(discount, float)
    assert (run / "counts.safetensors").is_file()
    loaded = load_run(run)
    kept = kept_count_model(loaded, 4, discount, mixed["count_model"])
    fresh = NGramModel.from_words(corpus.splits["train"], corpus.vocab, 4, "kneser_ney", discount)
    assert all(table is None for table in kept.counts.raw[:4])  # read back, not counted
    X, Y = corpus.examples("dev", 4)
    assert torch.equal(kept.probs(X), fresh.probs(X))
    assert kept.nll(X, Y) == fresh.nll(X, Y)

    assert main(["score", str(run), "--mix", "mana", "lia", "--json"]) == 0
    with_kept = json.loads(capsys.readouterr().out)
    data = (run / "counts.safetensors").read_bytes()
    (run / "counts.safetensors").unlink()
    assert main(["score", str(run), "--mix", "mana", "lia", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == with_kept

    # kept for another order: counted again (a crash between writing the counts and mix.json)
    rundir.write_counts(run, fresh.counts.kept(3), corpus.vocab.size, 3)
    assert kept_count_model(loaded, 4, discount).counts.raw[0] is not None
    # corrupted: one line, no traceback
    (run / "counts.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["score", str(run), "--mix", "mana"]) == 1
    err = capsys.readouterr().err
    assert "counts.safetensors" in err and "Traceback" not in err


@pytest.mark.parametrize("kept", [True, False])
def test_a_run_mixed_with_modified_kneser_ney_reads_back_with_it(trained, tmp_path, capsys, kept):
    """A run mixed with modified Kneser-Ney (mixture.attach given one; runs mix with one
    discount's by default) records "modified_kneser_ney" and its three discounts: eval, sample
    and resume read it with that model, from the kept counts or counted again."""
    import shutil

    from makemore import rundir
    from makemore.mixture import attach, run_predictor
    from makemore.predict import split_nll
    from makemore.runs import load_run

    corpus, _, trained_run = trained
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    modified = NGramModel.from_words(corpus.splits["train"], corpus.vocab, 4, "modified_kneser_ney")
    modified.tune(corpus.encoded("dev"))
    fitted = attach(load_run(run), modified)
    assert fitted["count_model"] == "modified_kneser_ney" and len(fitted["discount"]) == 3
    if not kept:
        (run / "counts.safetensors").unlink()
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(rundir.read_mixture(run)["mix_dev_loss"],
                                                                        abs=1e-5)
    count_model = run_predictor(load_run(run), "ngram")
    assert split_nll(count_model, corpus.encoded("dev")) == pytest.approx(modified.nll(corpus.encoded("dev")),
                                                                          abs=1e-5)
    assert main(["sample", str(run), "-n", "3", "--seed", "1"]) == 0


def test_ngram_compare_shows_a_mixed_runs_result_beside_its_model(trained, tmp_path, capsys):
    import shutil

    corpus, _, trained_run = trained
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "mix.json").unlink(missing_ok=True)  # as trained (other tests here mix the module's run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k not in ("mix", "result")}))
    assert main(["ngram", "--data", corpus.source, "--max-context", "2", "--compare", str(run), "--json"]) == 0
    assert "result" not in json.loads(capsys.readouterr().out)["mlp"]  # not mixed: its model is all it has
    assert main(["mix", str(run), "--ngram-context", "3", "--json"]) == 0
    mixed = json.loads(capsys.readouterr().out)
    assert main(["ngram", "--data", corpus.source, "--max-context", "2", "--compare", str(run), "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)["mlp"]
    assert compared["result"]["predictor"] == mixed["result"] != "model"
    expected = {"mixture": mixed["mix_dev_loss"], "ngram": mixed["ngram_dev_loss"]}[mixed["result"]]
    assert compared["result"]["dev_loss"] == pytest.approx(expected, rel=1e-12)
    assert compared["dev_loss"] == pytest.approx(mixed["mlp_dev_loss"], abs=1e-6)
    assert main(["ngram", "--data", corpus.source, "--max-context", "2", "--compare", str(run)]) == 0
    assert "the run's result" in capsys.readouterr().out
