"""--teacher: distillation from a Kneser-Ney model (TrainConfig.teacher) through the training
loop: the targets it builds, both engines, populations, budget runs, and what it refuses."""

import json
from dataclasses import replace

import numpy as np
import pytest

import makemore.baselines as baselines
import makemore.teacher as teacher
from makemore.cli import main
from makemore.config import make_configs
from makemore.data import load_corpus
from makemore.errors import UserError
from makemore.fit import train
from makemore.training import train_population


@pytest.fixture
def corpus(words_file):
    return load_corpus(words_file)


def small(corpus, **overrides):
    settings = dict(emb_dim=4, hidden=16, batch_size=8, steps=60, eval_interval=20, lr=0.1, teacher=0.5)
    settings.update(overrides)
    return make_configs("lecture", vocab_size=corpus.vocab.size, **settings)


def test_teacher_targets_are_the_count_models_distributions(corpus):
    kn = baselines.fit_on_dev(corpus, 3)
    train_ex = corpus.encoded("train")
    targets = teacher.teacher_targets(kn, train_ex)
    assert targets.shape == (len(train_ex), corpus.vocab.size) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-5)
    some = np.array([0, 5, len(train_ex) - 1])
    expected = kn.probs(train_ex.contexts(some, 3)).numpy()
    np.testing.assert_allclose(targets[some], expected, rtol=1e-6)
    # on the examples it counted, the teacher beats the uniform guess by far
    nll = -np.log(targets[np.arange(len(train_ex)), train_ex.targets(np.arange(len(train_ex)))]).mean()
    assert nll < 0.8 * np.log(corpus.vocab.size)


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_the_fused_and_autograd_engines_distil_alike(corpus, weight):
    model_cfg, cfg = small(corpus, teacher=weight, optimizer="adamw", lr=0.01)
    fused = train(corpus, model_cfg, cfg, progress=False)
    autograd = train(corpus, model_cfg, replace(cfg, engine="autograd"), progress=False)
    plain = train(corpus, model_cfg, replace(cfg, teacher=0.0), progress=False)
    assert fused.summary["engine"] == "fused" and autograd.summary["engine"] == "autograd"
    for (name, p), (_, q) in zip(fused.model.named_parameters(), autograd.model.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-3, atol=1e-4, err_msg=name)
    assert fused.summary["teacher_seconds"] >= 0 and "teacher_seconds" not in plain.summary
    assert not np.allclose(fused.model.W1.detach(), plain.model.W1.detach())  # the teacher changed the steps


def test_a_population_distils_as_its_solo_runs(corpus):
    model_cfg, base = small(corpus)
    cfgs = [replace(base, seed=3), replace(base, seed=7, lr=0.05)]
    members = train_population(corpus, model_cfg, cfgs, progress=False)
    for cfg, member in zip(cfgs, members):
        solo = train(corpus, model_cfg, cfg, progress=False)
        for (name, p), (_, q) in zip(solo.model.named_parameters(), member.model.named_parameters()):
            np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", ["gru", "transformer", "bow"])
def test_a_sequence_model_distils_every_column_of_its_windows(corpus, name, monkeypatch):
    """A sequence model predicts every character of its window; the teacher's distribution for
    each must line up with it. A teacher that is the one-hot of the true next character, taken
    whole (--teacher 1), is then the plain objective: the same weights, step for step."""
    from makemore import models

    def one_hot_teacher(kn, train_examples):
        ids = train_examples.targets(np.arange(len(train_examples)))
        return np.eye(corpus.vocab.size, dtype=np.float32)[ids]

    sizes = {k: v for k, v in dict(emb_dim=8, hidden=16, layers=1, heads=2).items() if k in models.config_fields(name)}
    model_cfg, cfg = make_configs(name, vocab_size=corpus.vocab.size, steps=20, batch_size=8, eval_interval=10,
                                  lr=0.01, optimizer="adamw", **sizes)
    plain = train(corpus, model_cfg, cfg, progress=False)
    monkeypatch.setattr(teacher, "teacher_targets", one_hot_teacher)
    taught = train(corpus, model_cfg, replace(cfg, teacher=1.0), progress=False)
    for (n, p), (_, q) in zip(plain.model.named_parameters(), taught.model.named_parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=n)
    monkeypatch.undo()
    kn = train(corpus, model_cfg, replace(cfg, teacher=0.5), progress=False)  # a real teacher moves the steps
    assert not np.allclose(kn.model.wte.weight.detach(), plain.model.wte.weight.detach())


def test_teacher_errors_are_one_line(corpus, words_file, tmp_path, monkeypatch, capsys):
    with pytest.raises(UserError, match="between 0 and 1"):
        make_configs("lecture", teacher=1.5)
    monkeypatch.setattr(teacher, "TEACHER_MAX_BYTES", 1000)
    code = main(["train", "--data", str(words_file), "--out", str(tmp_path / "r"), "--preset", "lecture",
                 "--steps", "5", "--teacher", "0.5", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "--teacher 0" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_cli_records_the_teacher(words_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--out", str(out), "--preset", "lecture", "--emb-dim", "4",
                 "--hidden", "16", "--steps", "30", "--teacher", "0.3", "--teacher-context", "2", "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["teacher"] == 0.3 and config["train"]["teacher_context"] == 2
    assert "teacher_seconds" in json.loads((out / "summary.json").read_text())
    assert main(["train", "--resume", str(out), "--steps", "40", "--quiet"]) == 0  # the teacher is made again
