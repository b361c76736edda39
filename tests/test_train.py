import math
import re

import pytest
import torch

from makemore.config import make_configs
from makemore.data import load_corpus
from makemore.rundir import load_checkpoint
from makemore.runs import load_run
from makemore.predict import model_predictor, split_nll
from makemore.batches import lr_at
from makemore.fit import resume, train


def small(corpus, **overrides):
    settings = dict(block_size=3, emb_dim=8, hidden=32, batch_size=16, steps=120, eval_interval=40,
                    lr=0.05, engine="autograd")
    settings.update(overrides)
    return make_configs("lecture", vocab_size=corpus.vocab.size, **settings)


@pytest.fixture
def corpus(words_file):
    return load_corpus(words_file)


def test_lr_schedules():
    _, cfg = make_configs("lecture")
    assert lr_at(cfg, 0) == 0.1 and lr_at(cfg, 99_999) == 0.1
    assert lr_at(cfg, 100_000) == pytest.approx(0.01)
    _, cfg = make_configs("default", schedule="cosine", lr=1.0, steps=100, warmup=0, min_lr_frac=0.1)
    assert lr_at(cfg, 0) == pytest.approx(1.0) and lr_at(cfg, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 50) == pytest.approx(0.55)
    _, cfg = make_configs("default", schedule="inverse", lr=1.0, decay_rate=0.5)
    assert lr_at(cfg, 2) == pytest.approx(0.5)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_same_seed_gives_bit_identical_weights(corpus, optimizer):
    lr = 0.05 if optimizer == "sgd" else 0.01
    a = train(corpus, *small(corpus, optimizer=optimizer, lr=lr, dropout=0.2, weight_decay=0.01), progress=False)
    b = train(corpus, *small(corpus, optimizer=optimizer, lr=lr, dropout=0.2, weight_decay=0.01), progress=False)
    c = train(corpus, *small(corpus, optimizer=optimizer, lr=lr, dropout=0.2, weight_decay=0.01, seed=7), progress=False)
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), n
    assert not torch.equal(a.model.W1, c.model.W1)


def test_training_lowers_dev_loss_and_writes_a_run(corpus, tmp_path):
    result = train(corpus, *small(corpus, steps=400), out=tmp_path / "run", progress=False)
    assert result.status == "completed"
    assert result.history[0]["dev_loss"] > result.summary["dev_loss"] + 0.3
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "vocab.json", "words.json", "best.safetensors", "last.safetensors",
            "metrics.csv", "summary.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header == "step,train_loss,dev_loss,lr,seconds"


def test_checkpoint_round_trip_gives_identical_loss(corpus, tmp_path):
    result = train(corpus, *small(corpus), out=tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    assert split_nll(model_predictor(run.model), corpus.encoded("dev")) == result.summary["dev_loss"]
    for (n, p), (_, q) in zip(result.model.named_parameters(), run.model.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_interrupted_run_resumes_to_the_same_weights(corpus, tmp_path, optimizer):
    lr = 0.05 if optimizer == "sgd" else 0.01
    settings = dict(optimizer=optimizer, lr=lr, dropout=0.1, schedule="cosine")
    straight = train(corpus, *small(corpus, **settings), progress=False)

    def interrupt_at_80(row):
        if row["step"] == 80:
            raise KeyboardInterrupt

    first = train(corpus, *small(corpus, **settings), out=tmp_path / "run", progress=False,
                  callbacks=(interrupt_at_80,))
    assert first.status == "interrupted" and "makemore train --resume" in first.message
    _, meta = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert meta["step"] == 80
    resumed = resume(tmp_path / "run", progress=False)
    assert resumed.status == "completed" and resumed.summary["steps"] == 120
    last = load_run(tmp_path / "run", checkpoint="last").model
    for (n, p), (_, q) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n
    steps = [int(line.split(",")[0]) for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no duplicated rows after resume
    assert last is not None


def test_ctrl_c_between_estimates_keeps_what_was_learned_since_the_last(corpus, tmp_path):
    """A long run's first dev estimate may be minutes away: Ctrl-C (SIGINT, handled by the loop)
    before it estimates the dev loss where it stopped, so best.safetensors is not the untrained
    model."""
    import os
    import signal
    import threading

    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = train(corpus, *small(corpus, steps=10**7, eval_interval=10**7), out=tmp_path / "run",
                       progress=False)
    finally:
        timer.cancel()
    assert result.status == "interrupted" and result.signal == "SIGINT"
    steps = result.summary["steps"]
    assert steps > 50 and [row["step"] for row in result.history] == [0, steps]
    assert result.summary["best_step"] == steps and result.history[1]["dev_loss"] < result.history[0]["dev_loss"]
    _, meta = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert meta["step"] == steps


def test_divergence_stops_with_a_message_and_keeps_the_best(corpus, tmp_path):
    result = train(corpus, *small(corpus, lr=1e35, steps=200, eval_interval=1000), out=tmp_path / "run",
                   progress=False)
    assert result.status == "diverged"
    assert "learning rate" in result.message
    assert math.isfinite(result.summary["dev_loss"])
    assert load_run(tmp_path / "run").model is not None


def test_the_package_functions_do_not_hide_their_modules():
    """`mm.train` and `mm.sample` are functions; the modules that hold them are named apart
    (fit, sampling), so `import makemore.fit as F` binds the module (that form reads the
    package's attribute) and a patch of it holds."""
    import importlib
    import types

    import makemore as mm

    for module_name, function_name in [("fit", "train"), ("sampling", "sample")]:
        importlib.import_module(f"makemore.{module_name}")
        module = getattr(mm, module_name)
        assert isinstance(module, types.ModuleType)
        assert getattr(mm, function_name) is getattr(module, function_name)


def test_final_examples_computes_the_final_losses_on_a_fixed_subset(corpus, tmp_path):
    """TrainConfig.final_examples (tune's trials on a big list): the summary's losses are over a
    fixed random subset of each split, and say how many examples they read."""
    dev, train_split = corpus.encoded("dev"), corpus.encoded("train")
    assert len(dev) > 40 and len(train_split) > 40
    whole = train(corpus, *small(corpus), progress=False)
    assert whole.summary["dev_loss_examples"] == len(dev) and "final_examples" not in whole.summary
    result = train(corpus, *small(corpus, final_examples=40), out=tmp_path / "run", progress=False)
    s = result.summary
    assert s["final_examples"] == 40 and s["dev_loss_examples"] == 40 and s["train_loss_examples"] == 40
    predictor = model_predictor(load_run(tmp_path / "run").model)
    assert s["dev_loss"] == pytest.approx(split_nll(predictor, dev, dev.subset(40)), abs=1e-6)
    assert s["train_loss"] == pytest.approx(split_nll(predictor, train_split, train_split.subset(40)), abs=1e-6)
    assert s["dev_loss"] != pytest.approx(split_nll(predictor, dev), abs=1e-6)  # not the whole split's


@pytest.mark.parametrize("settings, message", [
    (dict(steps="100"), "steps must be a whole number, got '100'"),
    (dict(steps=1.5), "steps must be a whole number, got 1.5"),
    (dict(lr="x"), "lr must be a number, got 'x'"),
    (dict(budget="abc"), "is not a duration"),
    (dict(budget=-3), "budget must be"),
    (dict(hiden=50), "unknown setting hiden (did you mean hidden?)"),
    (dict(vocab_size=5), "vocab_size comes from the data"),
    (dict(seeds="2"), "seeds must be a whole number"),
    (dict(hidden=True), "hidden must be a whole number"),
])
def test_settings_of_the_wrong_type_or_name_are_one_clear_error_before_anything_runs(corpus, settings, message):
    """The Python API takes settings by keyword as the command line takes flags: a wrong type, a
    misspelt name or a value out of bounds is one UserError naming it, before a note is made or
    anything counted (text, a fraction or a bool met arithmetic deep inside, or was rounded)."""
    from makemore.errors import UserError

    notes = []
    with pytest.raises(UserError, match=re.escape(message)):
        train(corpus, progress=False, note=notes.append, **settings)
    assert notes == []


def test_a_duration_is_read_as_the_command_line_reads_it():
    from makemore.config import read_settings

    assert read_settings({"budget": "2m", "steps": None})["budget"] == 120.0


def test_train_takes_a_corpus():
    from makemore.errors import UserError

    with pytest.raises(UserError, match="load_corpus"):
        train("names", steps=10)
