"""A GPU worth having (issue 26): `--device auto`, minibatches drawn on the device, losses read
at the loop's rows, the step captured as a CUDA graph, recipes keyed by device. What needs no GPU
runs everywhere (the device minibatches on the CPU device, the loop's deferred reading, auto
without a GPU); the rest skips cleanly without one."""

import json

import numpy as np
import pytest
import torch

import makemore as mm
from makemore import engines, recipes
from makemore.batches import DeviceMinibatches, Minibatches
from makemore.cli import main
from makemore.data import load_corpus

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.fixture
def corpus(words_file):
    return load_corpus(words_file)


@pytest.mark.parametrize("whole_words", [False, True])
def test_device_minibatches_gather_what_the_host_gathers_and_repeat_for_a_seed(corpus, whole_words):
    train = corpus.encoded("train")
    draws = DeviceMinibatches(train, 5, [7, 8], 16, "cpu", whole_words=whole_words)
    again = DeviceMinibatches(train, 5, [7, 8], 16, "cpu", whole_words=whole_words)
    for step in range(5):
        idx, y = draws.at(step, 100)
        idx2, y2 = again.at(step, 100)
        assert torch.equal(idx, idx2) and torch.equal(y, y2)  # reproducible for the seeds
        positions = draws.positions(step).numpy()
        X, Y = train.batch(positions.reshape(-1), 5)
        assert np.array_equal(idx.numpy().reshape(-1, 5), X) and np.array_equal(y.numpy().reshape(-1), Y)
        if whole_words:
            assert set(positions.reshape(-1)) <= set(train.word_windows(5))
        predicted, valid = draws.window_positions(draws.positions(step), 5)
        p2, v2 = train.window_positions(positions, 5)
        assert np.array_equal(predicted.numpy(), p2) and np.array_equal(valid.numpy(), v2)
    other = DeviceMinibatches(train, 5, [9, 8], 16, "cpu")
    assert not torch.equal(other.at(0, 100)[0][0], DeviceMinibatches(train, 5, [7, 8], 16, "cpu").at(0, 100)[0][0])


def test_the_loop_reads_losses_left_on_the_device_at_its_rows(corpus, monkeypatch):
    """An engine that returns its losses as a tensor (as on a GPU) gives the run the metrics of
    one that returns NumPy: the loop sums them there and reads them at each row."""
    model_cfg, train_cfg = mm.make_configs(model="gru", vocab_size=corpus.vocab.size, steps=40, batch_size=8,
                                           hidden=16, emb_dim=8, eval_interval=10, device="cpu")
    on_host = mm.train(corpus, model_cfg, train_cfg, progress=False)
    real = engines.AutogradEngine.step
    monkeypatch.setattr(engines.AutogradEngine, "step", lambda self, *a, **k: torch.from_numpy(real(self, *a, **k)))
    kept = mm.train(corpus, model_cfg, train_cfg, progress=False)
    assert kept.summary["dev_loss"] == on_host.summary["dev_loss"]
    assert [r["train_loss"] for r in kept.history] == pytest.approx([r["train_loss"] for r in on_host.history])


def test_a_diverging_run_is_caught_at_the_row_when_losses_stay_on_the_device(corpus, monkeypatch):
    model_cfg, train_cfg = mm.make_configs("lecture", vocab_size=corpus.vocab.size, steps=60, lr=1e6,
                                           engine="autograd", eval_interval=20, device="cpu")
    real = engines.AutogradEngine.step
    monkeypatch.setattr(engines.AutogradEngine, "step", lambda self, *a, **k: torch.from_numpy(real(self, *a, **k)))
    result = mm.train(corpus, model_cfg, train_cfg, progress=False)
    assert result.status == "diverged" and "learning rate" in result.message


def test_auto_without_a_gpu_trains_on_the_cpu_and_says_nothing(words_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--out", str(out), "--preset", "lecture", "--steps", "20",
                 "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["setup"]["device_reason"] == ""
    assert json.loads((out / "config.json").read_text())["train"]["device"] == "auto"


def test_recipes_are_keyed_by_device():
    table = {"recipes": [
        {"budget": 60.0, "model": "mlp", "settings": {}, "dev_loss": 2.0, "vocab_size": 27},
        {"budget": 60.0, "model": "gru", "settings": {}, "dev_loss": 1.9, "vocab_size": 27, "device": "cuda"},
        {"budget": 60.0, "model": "mlp", "settings": {}, "dev_loss": 2.6, "vocab_size": 3653},
    ]}
    assert recipes.choose(60, table=table, vocab_size=27)["model"] == "mlp"
    assert recipes.choose(60, table=table, vocab_size=27, device="cuda")["model"] == "gru"
    # no GPU recipe near a big vocabulary: the CPU's recipe for it
    assert recipes.choose(60, table=table, vocab_size=4000, device="cuda")["vocab_size"] == 3653
    assert all(r.get("device", "cpu") == "cpu" for r in recipes.tuned_on_names())


@cuda
@pytest.mark.parametrize("preset", ["gru", "transformer"])
def test_a_step_captured_as_a_cuda_graph_equals_the_eager_step(corpus, preset):
    from makemore.runtime import resolve

    model_cfg, train_cfg = mm.make_configs(preset, vocab_size=corpus.vocab.size, batch_size=16, device="cuda",
                                           precision="float32")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    runs = []
    for capture in (False, True):
        model = mm.build(model_cfg, seed=3).cuda()
        model.train()
        engine = engines.AutogradEngine([model], [train_cfg], capture=capture)
        batches = DeviceMinibatches(corpus.encoded("train"), model_cfg.block_size, [3], 16, "cuda", whole_words=True)
        losses = [engine.step(*batches.at(i, 100), np.array([1e-3])) for i in range(12)]
        assert (engine.captured is not None) == capture
        runs.append((model, torch.cat(losses).cpu()))
    (eager, eager_losses), (graphed, graphed_losses) = runs
    torch.testing.assert_close(graphed_losses, eager_losses, rtol=1e-4, atol=1e-5)
    # A parameter whose true gradient is zero (the attention's key bias: a softmax does not see a
    # constant added to every key's score) gets gradients of rounding noise, which Adam scales
    # up to steps of the learning rate's size either way; the others agree closely.
    atol = 12 * 1e-3 if preset == "transformer" else 1e-5
    for (name, p), (_, q) in zip(eager.named_parameters(), graphed.named_parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=atol, msg=name)
    assert resolve(model_cfg, [train_cfg]).cuda_graphs


@cuda
def test_auto_with_a_gpu_times_both_and_says_what_it_chose(words_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--out", str(out), "--preset", "best", "--steps", "30",
                 "--eval-examples", "200"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "--device auto took the" in capsys.readouterr().err
    assert summary["setup"]["device_reason"].startswith("--device auto took the")
    if summary["device"] == "cuda":
        assert summary["setup"]["cuda_graphs"] and summary["cuda_graph"]


@cuda
def test_device_minibatches_on_the_gpu_repeat_for_a_seed(corpus):
    train = corpus.encoded("train")
    a = DeviceMinibatches(train, 5, [1], 32, "cuda")
    b = DeviceMinibatches(train, 5, [1], 32, "cuda")
    for step in range(3):
        assert torch.equal(a.at(step, 9)[0], b.at(step, 9)[0])
    host = Minibatches(train, 5, [1], 32)
    assert host.at(0, 9)[0].shape == tuple(a.at(3, 9)[0].shape)
