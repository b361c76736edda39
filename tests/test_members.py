"""K members of one training loop (a population, a seed ensemble) against solo runs, seed
ensembles end to end, and the sweep and lr-find that train members together. Tiny data and a
few dozen steps throughout."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import makemore.experiments as experiments
from makemore.cli import main
from makemore.config import make_configs
from makemore.data import Examples, build_examples, load_corpus
from makemore.engines import AutogradEngine, Stack, make_engine
from makemore.errors import UserError
from makemore.experiments import lr_find
from makemore.fused_engine import FusedEngine
from makemore.models.mlp import MLP
from makemore.runs import load_ensemble, load_run
from makemore.batches import Minibatches
from makemore.fit import resume, train
from makemore.training import train_population

TINY = ["--preset", "lecture", "--emb-dim", "4", "--hidden", "16", "--batch-size", "8", "--steps", "60", "--quiet"]


@pytest.fixture
def corpus(words_file):
    return load_corpus(words_file)


def small(corpus, **overrides):
    settings = dict(emb_dim=4, hidden=16, batch_size=8, steps=60, eval_interval=20, lr=0.1)
    settings.update(overrides)
    return make_configs("lecture", vocab_size=corpus.vocab.size, **settings)


def assert_same_run(member, solo, history=True):
    """Weights to float rounding, and the same training curve and summary."""
    for (name, p), (_, q) in zip(solo.model.named_parameters(), member.model.named_parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    assert member.status == solo.status
    for key in ("steps", "best_step", "params"):
        assert member.summary[key] == solo.summary[key], key
    for key in ("train_loss", "dev_loss"):
        assert member.summary[key] == pytest.approx(solo.summary[key], abs=1e-4), key
    if not history:
        return
    assert [r["step"] for r in member.history] == [r["step"] for r in solo.history]
    assert [r["dev_loss"] for r in member.history] == pytest.approx([r["dev_loss"] for r in solo.history], abs=1e-4)


@pytest.mark.parametrize("optimizer, extra", [
    ("sgd", {}),
    ("sgd", {"weight_decay": 0.01}),
    ("adamw", {"weight_decay": 0.1, "lr": 0.01}),
    ("adamw", {"dropout": 0.2, "lr": 0.01, "layers": 2, "direct": True}),
    ("sgd", {"dropout": 0.3, "schedule": "cosine", "warmup": 10}),
])
def test_member_equals_a_solo_run(corpus, tmp_path, optimizer, extra):
    model_cfg, base = small(corpus, optimizer=optimizer, **extra)
    # members differ in seed, learning rate, weight decay and betas: anything but shape
    cfgs = [replace(base, seed=3), replace(base, seed=7, lr=base.lr * 2),
            replace(base, seed=3, lr=base.lr / 2, weight_decay=base.weight_decay * 3, betas=(0.8, 0.99))]
    dirs = [tmp_path / f"m{i}" for i in range(3)]
    members = train_population(corpus, model_cfg, cfgs, dirs, progress=False)
    for i, (cfg, member) in enumerate(zip(cfgs, members)):
        solo = train(corpus, model_cfg, cfg, out=tmp_path / f"solo{i}", progress=False)
        assert_same_run(member, solo)
        assert member.summary["engine"] == "fused" and member.summary["members"] == 3
        # each member is an ordinary run directory
        assert {p.name for p in dirs[i].iterdir()} == {p.name for p in (tmp_path / f"solo{i}").iterdir()}
        assert load_run(dirs[i]).train_cfg == cfg
    assert not np.allclose(members[0].model.W1.detach(), members[2].model.W1.detach())  # lr mattered


def test_a_diverging_member_stops_alone_as_a_solo_run_would(corpus):
    model_cfg, base = small(corpus)
    cfgs = [replace(base, lr=1e4, seed=1), replace(base, seed=2)]
    members = train_population(corpus, model_cfg, cfgs, progress=False)
    solo = train(corpus, model_cfg, cfgs[0], progress=False)
    assert members[0].status == solo.status == "diverged"
    assert members[0].summary["steps"] == solo.summary["steps"] < base.steps
    assert members[0].message == solo.message
    assert members[1].status == "completed" and members[1].summary["steps"] == base.steps
    assert_same_run(members[1], train(corpus, model_cfg, cfgs[1], progress=False))


def test_a_member_resumes_as_a_solo_run(corpus, tmp_path):
    """Its last checkpoint holds the optimizer and minibatch-generator state train() expects."""
    model_cfg, base = small(corpus, optimizer="adamw", lr=0.01, schedule="constant", dropout=0.1)
    cfgs = [replace(base, seed=s) for s in (5, 6)]
    train_population(corpus, model_cfg, cfgs, [tmp_path / "a", tmp_path / "b"], progress=False)
    resumed = resume(tmp_path / "b", steps=100, progress=False)
    solo = train(corpus, model_cfg, replace(cfgs[1], steps=100), progress=False)
    for (name, p), (_, q) in zip(solo.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_an_interrupted_population_saves_every_member_to_resume_alone(corpus, tmp_path, monkeypatch):
    model_cfg, base = small(corpus, dropout=0.1)
    cfgs = [replace(base, seed=s) for s in (1, 2)]
    real_step, calls = FusedEngine.step, []

    def step_then_interrupt(self, *args):
        calls.append(1)
        if len(calls) > 25:  # Ctrl-C during update 26, between two evaluations
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(FusedEngine, "step", step_then_interrupt)
    dirs = [tmp_path / "a", tmp_path / "b"]
    members = train_population(corpus, model_cfg, cfgs, dirs, progress=False)
    monkeypatch.setattr(FusedEngine, "step", real_step)
    assert [m.status for m in members] == ["interrupted"] * 2
    assert "makemore train --resume" in members[1].message and members[1].summary["steps"] == 25
    resumed = resume(dirs[1], progress=False)
    assert_same_run(resumed, train(corpus, model_cfg, cfgs[1], progress=False), history=False)  # (a resume's own)


def test_minibatch_state_mid_chunk_equals_a_generator_that_drew_as_many():
    # one word whose ids are 1, 2, ..., 999 (and the end token): example p's target is p + 1
    examples = Examples(np.append(np.arange(1, 1000), 0).astype(np.uint16), np.array([0]))
    batches = Minibatches(examples, 3, [11, 12], B=4)
    first_idx, first_y = batches.at(0, 99)
    for step in range(1, 30):
        batches.at(step, 99)
    g = torch.Generator().manual_seed(13)  # seed 12 + 1: member 1's generator
    expected = [torch.randint(0, 1000, (4,), generator=g) for _ in range(30)]
    assert torch.equal(batches.state(1, 30), g.get_state())
    g0 = torch.Generator().manual_seed(12)
    positions = torch.randint(0, 1000, (4,), generator=g0).numpy()
    np.testing.assert_array_equal(first_y[0], np.where(positions < 999, positions + 1, 0))
    np.testing.assert_array_equal(first_idx[0], examples.contexts(positions, 3))
    np.testing.assert_array_equal(batches.at(29, 99)[1][1], examples.targets(expected[29].numpy()))


def test_members_must_share_the_loop_and_an_engine_one_model_shape(corpus):
    model_cfg, base = small(corpus)
    for other, message in [(replace(base, batch_size=16), "share batch-size"),
                           (replace(base, steps=30), "share steps"),
                           (replace(base, engine="autograd"), "share engine")]:
        with pytest.raises(UserError, match=message):
            train_population(corpus, model_cfg, [base, other], progress=False)
    with pytest.raises(ValueError, match="one model config"):
        FusedEngine([MLP(model_cfg), MLP(replace(model_cfg, init="scaled"))], [base, base])


@pytest.mark.parametrize("engine, extra", [
    ("autograd", {"dropout": 0.2, "optimizer": "adamw", "lr": 0.01}),   # torch's RNG, swapped per member
    ("fused", {"hidden": 600, "batch_size": 600}),                        # too large to share a step: stacked
    ("fused", {"optimizer": "adamw", "lr": 0.01}),                        # members with other optimizers
])
def test_members_of_any_engine_equal_solo_runs(corpus, engine, extra):
    model_cfg, base = small(corpus, engine=engine, **extra)
    cfgs = [replace(base, seed=3), replace(base, seed=4, optimizer="sgd", lr=0.1)]
    members = [MLP(model_cfg, seed=c.seed) for c in cfgs]
    from makemore.runtime import resolve

    chosen = make_engine(members, cfgs, resolve(model_cfg, cfgs))
    assert isinstance(chosen, AutogradEngine if engine == "autograd" else Stack)
    results = train_population(corpus, model_cfg, cfgs, progress=False)
    for cfg, member in zip(cfgs, results):
        assert_same_run(member, train(corpus, model_cfg, cfg, progress=False))


# ----------------------------------------------------------------------------------------
# seed ensembles


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    from conftest import make_words

    tmp = tmp_path_factory.mktemp("ens")
    data = tmp / "words.txt"
    data.write_text("\n".join(make_words()) + "\n")
    out = tmp / "ens"
    assert main(["train", "--data", str(data), "--out", str(out), "--seeds", "3", "--seed", "5", *TINY]) == 0
    return out


def test_train_seeds_writes_one_run_per_seed_and_the_ensemble(ensemble_dir, capsys):
    info = json.loads((ensemble_dir / "ensemble.json").read_text())
    assert info["members"] == ["seed-5", "seed-6", "seed-7"] and info["seeds"] == [5, 6, 7]
    for s in (5, 6, 7):
        run = load_run(ensemble_dir / f"seed-{s}")
        assert run.train_cfg.seed == s and run.train_cfg.steps == 60
        assert json.loads((ensemble_dir / f"seed-{s}" / "summary.json").read_text())["status"] == "completed"
    assert main(["eval", str(ensemble_dir / "seed-6"), "--json"]) == 0  # a member is an ordinary run
    assert main(["plot", str(ensemble_dir / "seed-6")]) == 0


def test_ensemble_eval_is_the_mean_of_the_members_probabilities(ensemble_dir, capsys):
    assert main(["eval", str(ensemble_dir), "--split", "dev", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    runs = [load_run(ensemble_dir / f"seed-{s}") for s in (5, 6, 7)]
    X, Y = build_examples(runs[0].splits["dev"], runs[0].vocab, runs[0].model_cfg.block_size)
    with torch.no_grad():
        probs = [F.softmax(r.model(X)[0].double(), dim=1) for r in runs]
        members = [float(F.cross_entropy(r.model(X)[0].double(), Y)) for r in runs]
        mean_logits = sum(F.log_softmax(r.model(X)[0].double(), dim=1) for r in runs) / 3
    mean_prob = sum(probs) / 3
    by_hand = float(-torch.log(mean_prob[torch.arange(len(Y)), Y]).mean())
    assert result["loss"] == pytest.approx(by_hand, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(by_hand), rel=1e-5)
    assert [m["run"] for m in result["members"]] == ["seed-5", "seed-6", "seed-7"]
    assert [m["loss"] for m in result["members"]] == pytest.approx(members, rel=1e-5)
    # not the mean of the logits (a different model), and better than the members on average
    assert by_hand != pytest.approx(float(F.cross_entropy(mean_logits, Y)), rel=1e-4)
    assert by_hand < sum(members) / 3
    assert json.loads((ensemble_dir / "ensemble.json").read_text())["dev_loss"] == pytest.approx(by_hand, rel=1e-5)

    assert main(["eval", str(ensemble_dir)]) == 0
    text = capsys.readouterr().out
    assert "ensemble of 3" in text and text.count("seed-") == 3


def test_ensemble_sample_and_score(ensemble_dir, capsys):
    assert main(["sample", str(ensemble_dir), "-n", "12", "--seed", "2", "--json"]) == 0
    samples = json.loads(capsys.readouterr().out)
    assert len(samples) == 12 and {s["tag"] for s in samples} <= {"train", "dev", "test", "new"}
    assert main(["sample", str(ensemble_dir), "-n", "12", "--seed", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [s["text"] for s in samples]

    assert main(["score", str(ensemble_dir), "mana", "jjjj", "--json", "--verbose"]) == 0
    scores = json.loads(capsys.readouterr().out)
    runs = [load_run(ensemble_dir / f"seed-{s}") for s in (5, 6, 7)]
    X, Y = build_examples(["mana"], runs[0].vocab, 3)
    with torch.no_grad():
        p = sum(F.softmax(r.model(X)[0].double(), dim=1) for r in runs) / 3
    assert scores[0]["nll"] == pytest.approx(float(-torch.log(p[torch.arange(5), Y]).sum()), rel=1e-5)
    assert [c["prob"] for c in scores[0]["chars"]] == pytest.approx(p[torch.arange(5), Y].tolist(), rel=1e-5)


def _one_error_line(capsys, code) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("makemore: error:"), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "ensemble.json").write_text("{not json"), "ensemble.json is corrupted"),
    (lambda d: (d / "ensemble.json").write_text('{"members": ["seed-5"]}'), "format tag"),
    (lambda d: (d / "ensemble.json").write_text('{"format": "makemore-ensemble/1", "members": []}'), "by name"),
    (lambda d: (d / "ensemble.json").write_text('{"format": "makemore-ensemble/1", "members": ["../x"]}'), "by name"),
    (lambda d: __import__("shutil").rmtree(d / "seed-6"), "run directory not found"),
    (lambda d: (d / "seed-7" / "best.safetensors").write_bytes(b"garbage"), "not a readable makemore checkpoint"),
    (lambda d: (d / "seed-7" / "vocab.json").write_text('{"chars": [".", "a", "b"]}'), "vocab.json has 3"),
])
def test_a_broken_ensemble_is_one_error_line(ensemble_dir, tmp_path, capsys, damage, message):
    import shutil

    ens = tmp_path / "ens"
    shutil.copytree(ensemble_dir, ens)
    damage(ens)
    for cmd in (["eval", str(ens)], ["sample", str(ens)], ["score", str(ens), "ana"]):
        line = _one_error_line(capsys, main(cmd))
        assert message in line and "broken ensemble" in line, line
    with pytest.raises(UserError):
        load_ensemble(ens)


def test_train_seeds_errors_are_one_line(words_file, ensemble_dir, tmp_path, capsys):
    out = tmp_path / "e"
    assert "--seeds must be at least 1" in _one_error_line(
        capsys, main(["train", "--data", str(words_file), "--out", str(out), "--seeds", "0", *TINY]))
    assert "drop --seeds" in _one_error_line(capsys, main(["train", "--resume", str(ensemble_dir / "seed-5"), "--seeds", "2"]))
    # every member diverges: the ensemble is kept (best checkpoints of step 0) and the exit status says so
    code = main(["train", "--data", str(words_file), "--out", str(out), "--seeds", "2", "--lr", "1e5", *TINY])
    assert "2 of 2 seeds diverged" in _one_error_line(capsys, code)
    assert json.loads((out / "ensemble.json").read_text())["members"] == ["seed-42", "seed-43"]


def test_commands_of_one_run_name_the_ensemble(ensemble_dir, tmp_path, capsys):
    """... its members by name and the commands that do take it whole (mix and serve too)."""
    data = str(ensemble_dir.parent / "words.txt")
    for cmd in (["plot", str(ensemble_dir)], ["embeddings", str(ensemble_dir)],
                ["train", "--resume", str(ensemble_dir)], ["ngram", "--data", data, "--compare", str(ensemble_dir)],
                ["ensemble", str(ensemble_dir / "seed-5"), str(ensemble_dir), "--out", str(tmp_path / "e")]):
        line = _one_error_line(capsys, main(cmd))
        assert "is a seed ensemble" in line and "(seed-5, seed-6, seed-7)" in line, line
        assert "eval, sample, score, classify, mix and serve take the whole ensemble" in line
    assert not (tmp_path / "e").exists()


def test_an_ensemble_mixes_with_the_ngram_model(ensemble_dir, capsys):
    """`mix ENS` fits the Kneser-Ney mixture on the ensemble's averaged prediction; weight 1
    would give the ensemble's own dev loss, so the tuned mixture can only match or beat it."""
    assert main(["eval", str(ensemble_dir), "--json"]) == 0
    ens_loss = json.loads(capsys.readouterr().out)["loss"]
    assert main(["mix", str(ensemble_dir), "--ngram-context", "3", "--json"]) == 0
    mix = json.loads(capsys.readouterr().out)
    assert mix["mlp_dev_loss"] == pytest.approx(ens_loss, abs=1e-6)
    assert mix["mix_dev_loss"] <= min(mix["mlp_dev_loss"], mix["ngram_dev_loss"]) + 1e-9
    assert main(["sample", str(ensemble_dir), "--mix", "-n", "5", "--seed", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
    (ensemble_dir / "mix.json").unlink()  # the fixture is shared


# ----------------------------------------------------------------------------------------
# sweep and lr-find


def test_sweep_trains_equal_shapes_as_one_population_and_a_rerun_skips(words_file, tmp_path, capsys, monkeypatch):
    calls = {"population": []}
    real_members = experiments.train_members

    def counting_members(corpus, model_cfg, cfgs, dirs, **kw):
        calls["population"].append([d.name for d in dirs])
        return real_members(corpus, model_cfg, cfgs, dirs, **kw)

    monkeypatch.setattr(experiments, "train_members", counting_members)
    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(words_file), "--preset", "lecture", "--emb-dim", "4", "--batch-size", "8",
            "--steps", "30", "--grid", "hidden=8,16 lr=0.05,0.2 seed=1,2", "--out", str(out), "--json"]
    assert main(args) == 0
    table = json.loads(capsys.readouterr().out)
    assert len(table) == 8
    # one population per hidden size, each of its 4 (lr, seed) points
    assert sorted(len(g) for g in calls["population"]) == [4, 4]
    assert {frozenset(g) for g in calls["population"]} == {
        frozenset(r["name"] for r in table if r["hidden"] == h) for h in (8, 16)}
    for r in table:
        summary = json.loads((out / r["name"] / "summary.json").read_text())
        assert summary["engine"] == "fused" and summary["members"] == 4 and summary["dev_loss"] == r["dev_loss"]
    # a member equals its point trained alone
    corpus = load_corpus(words_file)
    point = next(r for r in table if (r["hidden"], r["lr"], r["seed"]) == (16, 0.2, 2))
    model_cfg, train_cfg = make_configs("lecture", vocab_size=corpus.vocab.size, emb_dim=4, batch_size=8, steps=30,
                                        hidden=16, lr=0.2, seed=2)
    assert train(corpus, model_cfg, train_cfg, progress=False).summary["dev_loss"] == pytest.approx(
        point["dev_loss"], abs=1e-4)

    calls["population"].clear()
    assert main(args) == 0
    assert calls == {"population": []}  # nothing trained again
    assert json.loads(capsys.readouterr().out) == table

    # two killed runs of one shape are trained again together, the other points kept
    victims = [r["name"] for r in table if r["hidden"] == 8][:2]
    for name in victims:
        (out / name / "summary.json").unlink()
    assert main(args) == 0
    assert [sorted(g) for g in calls["population"]] == [sorted(victims)]


def test_lr_find_with_seeds_averages_the_solo_curves(corpus):
    model_cfg, train_cfg = small(corpus)
    together = lr_find(corpus, model_cfg, train_cfg, 0.01, 0.5, steps=40, seeds=3)
    solos = [lr_find(corpus, model_cfg, replace(train_cfg, seed=train_cfg.seed + i), 0.01, 0.5, steps=40)
             for i in range(3)]
    assert together.engine == "fused" and together.settings["seeds"] == 3
    mean = np.mean([[r["loss"] for r in s.rows] for s in solos], axis=0)
    assert [r["loss"] for r in together.rows] == pytest.approx(list(mean), rel=1e-5)
    assert not np.allclose([r["loss"] for r in solos[0].rows], mean)  # the seeds differ


def test_lr_find_with_seeds_stops_at_the_first_divergence(corpus):
    model_cfg, train_cfg = small(corpus)
    together = lr_find(corpus, model_cfg, train_cfg, 1, 1e6, steps=30, seeds=2)
    solos = [lr_find(corpus, model_cfg, replace(train_cfg, seed=train_cfg.seed + i), 1, 1e6, steps=30) for i in range(2)]
    assert together.diverged_at == min(s.diverged_at for s in solos)
    assert together.rows[-1]["loss"] is None


def test_lr_find_cli_seeds(words_file, tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(["lr-find", "--data", str(words_file), "--preset", "lecture", "--emb-dim", "4", "--hidden", "16",
                 "--steps", "30", "--seeds", "2", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "fused"
    assert (out / "lr_find.png").is_file()
