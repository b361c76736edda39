"""Never worse than counting (issue 25): a run's result is its mixture with the count model, or
the count model alone where the neural model adds nothing; eval, sample and score use it, and
--neural the model alone. And the counting a budget run plans around is measured, not guessed."""

import json
import random
import time

import pytest

import makemore as mm
from makemore import fit, mixture
from makemore.cli import main
from makemore.data import load_corpus
from makemore.baselines import estimate_fit_seconds, fit_on_dev

# A recipe that learns nothing in its budget: a learning rate of next to nothing.
USELESS = {"machine": "test machine", "date": "2026-01-01", "recipes": [
    {"budget": 1, "model": "mlp", "preset": "fast", "dev_loss": 3.0, "train_examples": 1000,
     "settings": {"hidden": 16, "lr": 1e-9, "teacher": 0.0, "threads": 1}}]}


def test_a_budget_run_keeps_the_count_model_where_the_neural_model_is_worse(words_file, tmp_path, capsys, monkeypatch):
    from makemore import recipes

    monkeypatch.setattr(recipes, "load", lambda: USELESS)
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--budget", "3", "--out", str(out), "--quiet"]) == 0
    assert "count model is the run's result" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    mix = json.loads((out / "mix.json").read_text())
    assert mix["result"] == "ngram" and summary["result"]["predictor"] == "ngram"
    assert summary["result"]["dev_loss"] == pytest.approx(mix["ngram_dev_loss"])
    assert summary["dev_loss"] > mix["ngram_dev_loss"]  # the model alone is far worse
    # eval, sample and score use the result (the count model); --neural the model alone
    assert main(["eval", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["predictor"] == "ngram" and result["loss"] == pytest.approx(mix["ngram_dev_loss"], abs=1e-6)
    assert main(["eval", str(out), "--neural", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(summary["dev_loss"], abs=1e-6)
    assert main(["score", str(out), "--json", "mana"]) == 0
    counted = json.loads(capsys.readouterr().out)[0]["nll"]
    assert main(["score", str(out), "--neural", "--json", "mana"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["nll"] != pytest.approx(counted)
    assert main(["sample", str(out), "-n", "5", "--seed", "1"]) == 0


def test_a_run_that_learned_is_mixed_and_the_mixture_is_its_result(words_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--preset", "lecture", "--hidden", "32", "--steps", "600",
                 "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictor"] == "model"  # no mixture fitted: the model
    assert main(["mix", str(out), "--ngram-context", "3"]) == 0
    capsys.readouterr()
    mix = json.loads((out / "mix.json").read_text())
    assert main(["eval", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["predictor"] == mix["result"] == mixture.result_of(mix)
    expected = {"mixture": mix["mix_dev_loss"], "ngram": mix["ngram_dev_loss"], "model": mix["mlp_dev_loss"]}
    assert result["loss"] == pytest.approx(expected[mix["result"]], abs=1e-6)
    assert mix["result"] != "model"  # 600 steps of a small model: the mixture wins
    (out / "mix.json").unlink()  # removed: eval must not answer with the model alone, unsaid
    assert main(["eval", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mix.json is missing" in err and f"makemore mix {out}" in err
    assert main(["eval", str(out), "--neural", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(mix["mlp_dev_loss"], abs=1e-6)


@pytest.mark.parametrize("fitted, expected", [
    ({"weight": 1.0, "mlp_dev_loss": 2.0, "ngram_dev_loss": 2.5, "mix_dev_loss": 2.0}, "model"),
    ({"weight": 0.0, "mlp_dev_loss": 3.0, "ngram_dev_loss": 2.5, "mix_dev_loss": 2.5}, "ngram"),
    ({"weight": 0.2, "mlp_dev_loss": 3.0, "ngram_dev_loss": 2.5, "mix_dev_loss": 2.4995}, "ngram"),
    ({"weight": 0.4, "mlp_dev_loss": 2.6, "ngram_dev_loss": 2.5, "mix_dev_loss": 2.45}, "mixture"),
])
def test_which_predictor_is_the_result(fitted, expected):
    assert mixture.result_of(fitted) == expected


def syllable_file(path, n: int, seed: int = 0):
    rng = random.Random(seed)
    syllables = [a + b for a in "bdfgklmnprstvz" for b in "aeiou"] + ["an", "el", "or", "ist"]
    path.write_text("\n".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 5))) for _ in range(n)))
    return path


@pytest.mark.parametrize("words", [30_000, 200_000])
def test_the_counting_cost_estimate_is_within_a_factor_of_two_of_the_measured_time(tmp_path, words):
    """What a budget run plans for counting is measured on a sample of this data and scaled to
    the whole split (baselines.estimate_fit_seconds): within 2x of counting it whole, at two sizes
    (the median of three, so that one stall of a shared machine does not decide)."""
    corpus = load_corpus(syllable_file(tmp_path / "w.txt", words))
    estimates, measured = [], []
    for _ in range(3):
        estimates.append(estimate_fit_seconds(corpus, 5))
        started = time.perf_counter()
        fit_on_dev(corpus, 5)
        measured.append(time.perf_counter() - started)
    estimate, actual = sorted(estimates)[1], sorted(measured)[1]
    assert actual / 2 <= estimate <= actual * 2, (estimate, actual)


def test_a_budget_too_short_for_the_measured_counting_trains_alone(words_file, monkeypatch):
    corpus = load_corpus(words_file)
    notes = []
    monkeypatch.setattr(fit, "estimate_fit_seconds", lambda corpus, context: 5.0)
    assert fit.count_inside_budget(corpus, 5.0, notes.append) is None and "trained alone" in notes[0]
    counted = fit.count_inside_budget(corpus, 100.0, notes.append)
    assert counted is not None and counted[0].context == 5 and counted[1] > 0
    assert isinstance(mm.train, type(fit.train))


@pytest.mark.parametrize("labelled", [False, True])
def test_the_mixture_reuses_the_final_evaluation_and_fits_what_scoring_again_fits(tmp_path, labelled, monkeypatch):
    """A run that mixes fits the weight on its final evaluation's log-probabilities of the dev
    targets (TrainResult.dev_log_probs), not on a second pass over the dev split, and fits the
    same mixture as `makemore mix` scoring the split afresh, a labelled list included."""
    from conftest import make_words

    from makemore import predict
    from makemore.runs import load_any

    words = make_words(300, seed=3)
    path = tmp_path / "words.txt"
    path.write_text("\n".join(f"{'ab'[i % 2]}\t{w}" if labelled else w for i, w in enumerate(words)) + "\n")
    corpus = load_corpus(path, labels=labelled)
    passes = []
    real = predict.target_log_probs

    def counted(predictor, examples, *args, **kwargs):
        passes.append(len(examples))
        return real(predictor, examples, *args, **kwargs)

    monkeypatch.setattr(mixture, "target_log_probs", counted)  # the mixture's own scoring of dev
    result = mm.train(corpus, model="mlp", out=tmp_path / "run", steps=200, batch_size=32, hidden=32, mix=True,
                      progress=False, note=lambda s: None)
    dev = len(corpus.encoded("dev"))
    assert result.dev_log_probs.shape == (dev,)
    assert float(-result.dev_log_probs.mean()) == pytest.approx(result.summary["dev_loss"], rel=1e-12)
    assert passes == []  # the weight was fitted on the final evaluation's log-probs
    kept = result.summary["mix"]
    fresh = mixture.attach(load_any(tmp_path / "run"), context=kept["ngram_context"])
    assert passes == [dev]
    assert fresh["weight"] == kept["weight"]
    assert fresh["mix_dev_loss"] == pytest.approx(kept["mix_dev_loss"], abs=1e-6)
    assert fresh["mlp_dev_loss"] == pytest.approx(kept["mlp_dev_loss"], abs=1e-6)
