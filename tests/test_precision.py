"""--precision bfloat16 (TrainConfig.precision): the training step's matrix products in
bfloat16, in the fused engine (its own casts) and the autograd engine (torch.autocast)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from makemore import fused, models
from makemore.cli import main
from makemore.config import make_configs
from makemore.data import load_corpus
from makemore.errors import UserError
from makemore.models.mlp import MLP
from makemore.fit import train
from makemore.training import train_population
from makemore.utils import native_bfloat16

SMALL = {"emb_dim": 8, "hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0}


@pytest.fixture
def corpus(words_file):
    return load_corpus(words_file)


def _autograd_grads(model, xb, yb, precision):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        _, loss = model(torch.as_tensor(xb), torch.as_tensor(yb))
    loss.backward()
    return loss.item(), {n: p.grad.detach().double().numpy() for n, p in model.named_parameters()}


def _flat(grads, names):
    return np.concatenate([np.ravel(grads[n]) for n in names])


@pytest.mark.parametrize("layers,direct", [(1, False), (2, True)])
def test_fused_bfloat16_gradients_are_autocasts(layers, direct):
    """The fused engine's bfloat16 step rounds where torch.autocast rounds: its gradients agree
    with autograd's under autocast to bfloat16's precision, and differ from float32's."""
    cfg, _ = make_configs("default", vocab_size=27, block_size=4, emb_dim=10, hidden=64, layers=layers,
                          direct=direct, dropout=0.0)
    model = MLP(cfg, seed=1)
    rng = np.random.default_rng(0)
    xb, yb = rng.integers(0, 27, (256, 4)), rng.integers(0, 27, 256)
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    loss16, fused16 = fused.loss_and_grads(params, xb, yb, cfg, precision="bfloat16")
    loss32, fused32 = fused.loss_and_grads(params, xb, yb, cfg)
    ref_loss16, auto16 = _autograd_grads(model, xb, yb, "bfloat16")
    ref_loss32, auto32 = _autograd_grads(model, xb, yb, "float32")
    f16, a16, f32, a32 = (_flat(g, names) for g in (fused16, auto16, fused32, auto32))
    assert abs(loss32 - ref_loss32) < 1e-5
    np.testing.assert_allclose(f32, a32, rtol=1e-4, atol=1e-6)
    # bfloat16 keeps 8 bits of mantissa: a relative error ~2^-9 per rounding, a few roundings deep
    assert abs(loss16 - ref_loss16) < 2e-2 and abs(loss16 - loss32) < 2e-2
    scale = np.linalg.norm(a32)
    assert np.linalg.norm(f16 - a16) < 2e-2 * scale
    assert np.linalg.norm(f16 - f32) < 2e-2 * scale
    assert np.linalg.norm(f16 - f32) > 1e-5 * scale  # the products were rounded
    assert np.linalg.norm(a16 - a32) > 1e-5 * scale  # and autocast rounded its own


def test_bfloat16_training_follows_float32(corpus):
    """Both engines train in bfloat16 to within noise of float32, and a population member is
    its solo run in bfloat16 too."""
    model_cfg, cfg = make_configs("default", vocab_size=corpus.vocab.size, emb_dim=8, hidden=64, steps=300,
                                  batch_size=64, eval_interval=100, lr=0.01, dropout=0.0)
    runs = {}
    for engine in ("fused", "autograd"):
        for precision in ("float32", "bfloat16"):
            result = train(corpus, model_cfg, replace(cfg, engine=engine, precision=precision), progress=False)
            assert result.summary["engine"] == engine and result.summary["precision"] == precision
            runs[engine, precision] = result.summary["dev_loss"]
    for engine in ("fused", "autograd"):  # each engine did round (same seed, same data: else equal)
        assert runs[engine, "bfloat16"] != runs[engine, "float32"]
    assert abs(runs["fused", "bfloat16"] - runs["fused", "float32"]) < 0.05
    assert abs(runs["autograd", "bfloat16"] - runs["autograd", "float32"]) < 0.05
    assert abs(runs["fused", "bfloat16"] - runs["autograd", "bfloat16"]) < 0.05
    cfgs = [replace(cfg, steps=40, precision="bfloat16", seed=s) for s in (3, 4)]
    members = train_population(corpus, model_cfg, cfgs, progress=False)
    solo = train(corpus, model_cfg, cfgs[1], progress=False)
    for (name, p), (_, q) in zip(solo.model.named_parameters(), members[1].model.named_parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-3, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("name", [n for n in models.REGISTRY if n != "mlp"])
def test_every_model_trains_in_bfloat16(name, corpus):
    fields = models.config_fields(name)
    sizes = {k: v for k, v in SMALL.items() if k in fields}
    model_cfg, cfg = make_configs(model=name, vocab_size=corpus.vocab.size, steps=60, batch_size=32,
                                  eval_interval=30, eval_examples=200, precision="bfloat16", **sizes)
    result = train(corpus, model_cfg, cfg, progress=False)
    assert result.status == "completed" and result.summary["precision"] == "bfloat16"
    assert np.isfinite(result.summary["dev_loss"]) and result.summary["dev_loss"] < np.log(corpus.vocab.size) + 0.5
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # the weights stay float32


def test_precision_is_checked_and_recorded(words_file, tmp_path, capsys):
    with pytest.raises(UserError, match="precision must be one of"):
        make_configs("lecture", precision="float16")
    assert make_configs("lecture")[1].precision == "auto"
    code = main(["train", "--data", str(words_file), "--out", str(tmp_path / "r"), "--preset", "lecture",
                 "--steps", "5", "--precision", "half", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "precision" in err and "Traceback" not in err
    assert main(["train", "--data", str(words_file), "--out", str(tmp_path / "b"), "--preset", "lecture",
                 "--steps", "20", "--precision", "bfloat16", "--quiet"]) == 0
    assert (tmp_path / "b" / "config.json").read_text().count('"precision": "bfloat16"') == 1


def test_native_bfloat16_reads_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open
    for flags, expected in (("fpu avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True), ("fpu avx2", False)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k))
        assert native_bfloat16("cpu") is expected
        monkeypatch.setattr(builtins, "open", real_open)


def test_auto_takes_bfloat16_where_a_timed_run_gains(monkeypatch):
    import makemore.utils
    from makemore.runtime import resolve_precision

    big = make_configs("default", vocab_size=27, hidden=512, batch_size=512)
    small = make_configs("lecture", vocab_size=27)
    gru = make_configs(model="gru", vocab_size=27, hidden=512, batch_size=512)
    for native in (True, False):
        monkeypatch.setattr(makemore.utils, "native_bfloat16", lambda device="cpu": native)
        timed = lambda cfgs, **kw: (cfgs[0], replace(cfgs[1], budget=60.0, **kw))  # noqa: E731
        assert resolve_precision(*timed(big), "cpu") == ("bfloat16" if native else "float32")
        assert resolve_precision(*timed(big), "cuda") == ("bfloat16" if native else "float32")
        assert resolve_precision(*big, "cpu") == "float32"  # no budget: fixed-step runs stay float32
        assert resolve_precision(*timed(small), "cpu") == "float32"  # NumPy's small products
        assert resolve_precision(*timed(big, engine="autograd"), "cpu") == "float32"
        assert resolve_precision(*timed(gru), "cpu") == "float32"
        assert resolve_precision(*timed(big, precision="float32"), "cpu") == "float32"
        assert resolve_precision(*timed(small, precision="bfloat16"), "cpu") == "bfloat16"
