"""The fused engine (hand-written backward + optimizer) against torch autograd and torch.optim."""

import warnings

import numpy as np
import pytest
import torch

import makemore.models.mlp
from makemore import fused, fused_engine
from makemore.config import make_configs
from makemore.fused import loss_and_grads, unsupported_reason
from makemore.fused_engine import FusedEngine
from makemore.models.mlp import MLP, param_shapes


class Solo:
    """A one-member FusedEngine seen as one model's engine: step(xb, yb, lr) -> loss."""

    def __init__(self, model, train_cfg):
        self.engine = FusedEngine([model], [train_cfg])

    def step(self, xb, yb, lr):
        return float(self.engine.step(np.asarray(xb)[None], np.asarray(yb)[None], np.array([lr]))[0])

    def state_dict(self):
        return self.engine.member_state(0)

    def load_state_dict(self, state):
        self.engine.load_member_state(0, state)

    def grads(self):
        return {n: g[0] for n, g in fused.views(self.engine.cfg, self.engine.grad_flat).items()}


def small_cfg(**overrides):
    settings = dict(vocab_size=11, block_size=3, emb_dim=4, hidden=16)
    settings.update(overrides)
    return make_configs("lecture", **settings)


def random_batch(cfg, B, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, cfg.vocab_size, (B, cfg.block_size), generator=g),
            torch.randint(0, cfg.vocab_size, (B,), generator=g))


def autograd_loss_and_grads(model, xb, yb):
    model.zero_grad(set_to_none=True)
    _, loss = model(xb, yb)
    loss.backward()
    return loss.item(), {n: p.grad.numpy() for n, p in model.named_parameters()}


def assert_grads_close(ours, theirs, rtol):
    assert set(ours) == set(theirs)
    for name in theirs:
        scale = np.abs(theirs[name]).max()
        assert scale > 0, f"{name}: zero gradient, nothing is tested"
        err = np.abs(ours[name] - theirs[name]).max() / scale
        assert err <= rtol, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("init", ["randn", "scaled"])
def test_gradients_match_autograd_in_float64(layers, direct, init):
    cfg, _ = small_cfg(layers=layers, direct=direct, init=init)
    model = MLP(cfg, seed=3).double()
    if init == "scaled":  # biases and W_direct start at zero: move them so they matter
        with torch.no_grad():
            g = torch.Generator().manual_seed(4)
            for name, p in model.named_parameters():
                if name.startswith("b") or name == "W_direct":
                    p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    xb, yb = random_batch(cfg, 37, seed=5)
    loss, grads = autograd_loss_and_grads(model, xb, yb)
    our_loss, our_grads = loss_and_grads(dict(model.named_parameters()), xb, yb, cfg)
    assert our_loss == pytest.approx(loss, rel=1e-12)
    assert all(g.dtype == np.float64 for g in our_grads.values())
    assert_grads_close(our_grads, grads, rtol=1e-6)


@pytest.mark.parametrize("teacher_weight", [0.0, 0.5, 1.0])
def test_gradients_against_a_teacher_match_autograd(teacher_weight):
    """--teacher: the cross-entropy against (1-a) onehot(y) + a teacher, differentiated by hand,
    is autograd's; the loss reported is the one-hot one."""
    cfg, _ = small_cfg(layers=2, direct=True)
    model = MLP(cfg, seed=3).double()
    xb, yb = random_batch(cfg, 37, seed=5)
    teacher = torch.softmax(torch.randn(37, cfg.vocab_size, generator=torch.Generator().manual_seed(6),
                                        dtype=torch.float64), -1)
    model.zero_grad(set_to_none=True)
    logits, hard = model(xb, yb)
    soft = -(teacher * torch.log_softmax(logits, -1)).sum(-1).mean()
    ((1 - teacher_weight) * hard + teacher_weight * soft).backward()
    grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
    our_loss, our_grads = loss_and_grads(dict(model.named_parameters()), xb, yb, cfg,
                                         teacher=teacher.numpy(), teacher_weight=teacher_weight)
    assert our_loss == pytest.approx(hard.item(), rel=1e-12)
    assert_grads_close(our_grads, grads, rtol=1e-6)


def test_large_batches_multiply_with_torch_and_agree():
    """Products too big for OpenBLAS's single thread go through torch.mm (one thread pool)."""
    from makemore import fused

    lecture, _ = make_configs("lecture")
    assert fused.Workspace(lecture, 32, np.float32, dropout=False).matmul is np.matmul
    cfg, _ = small_cfg(layers=2, hidden=64, direct=True)
    assert fused.Workspace(cfg, 300, np.float64, dropout=False).matmul is fused._torch_matmul
    model = MLP(cfg, seed=3).double()
    xb, yb = random_batch(cfg, 300, seed=5)
    loss, grads = autograd_loss_and_grads(model, xb, yb)
    our_loss, our_grads = loss_and_grads(dict(model.named_parameters()), xb, yb, cfg)
    assert our_loss == pytest.approx(loss, rel=1e-12)
    assert_grads_close(our_grads, grads, rtol=1e-6)


@pytest.mark.parametrize("layers", [1, 2])
def test_gradients_with_a_given_dropout_mask(layers, monkeypatch):
    cfg, _ = small_cfg(layers=layers, dropout=0.3, direct=True)
    model = MLP(cfg, seed=3).double()
    xb, yb = random_batch(cfg, 29, seed=6)
    g = torch.Generator().manual_seed(7)
    masks = [(torch.rand(29, cfg.hidden, generator=g) >= 0.3).double() for _ in range(layers)]
    remaining = list(masks)

    def dropout_with_our_mask(h, p, training=True, inplace=False):  # F.dropout, given mask
        assert training and p == 0.3
        return h * remaining.pop(0) / (1 - p)

    monkeypatch.setattr(makemore.models.mlp.F, "dropout", dropout_with_our_mask)
    model.train()
    loss, grads = autograd_loss_and_grads(model, xb, yb)
    assert not remaining  # one mask per hidden layer was used
    our_loss, our_grads = loss_and_grads(dict(model.named_parameters()), xb, yb, cfg,
                                         dropout_mask=[m.numpy() for m in masks])
    assert our_loss == pytest.approx(loss, rel=1e-12)
    assert_grads_close(our_grads, grads, rtol=1e-6)
    # and the mask matters: without it the gradients differ
    _, no_dropout = loss_and_grads(dict(model.named_parameters()), xb, yb, cfg)
    assert not np.allclose(no_dropout["W_out"], grads["W_out"])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", ["huge", "very negative"])
def test_extreme_logits(dtype, case):
    """exp overflows past ~709 in float64 (~88 in float32) and underflows below ~-745 (~-103):
    loss and gradients must still equal autograd's, with no warning. float32 goes through one
    SGD step of the engine."""
    cfg, train_cfg = small_cfg(direct=True)
    model = MLP(cfg, seed=3).to(dtype)
    limit = 710 if dtype == torch.float64 else 89
    with torch.no_grad():
        if case == "huge":
            model.W_out.mul_(2000.0 if dtype == torch.float64 else 300.0)
        else:
            model.b_out.sub_(10 * limit)
    xb, yb = random_batch(cfg, 16, seed=8)
    logits, _ = model(xb)
    if case == "huge":  # some wrong class beats the target by more than exp can take
        assert (logits - logits.gather(1, yb[:, None])).max().item() > limit
    else:
        assert logits.max().item() < -limit
    loss, grads = autograd_loss_and_grads(model, xb, yb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if dtype == torch.float64:
            our_loss, our_grads = loss_and_grads(dict(model.named_parameters()), xb, yb, cfg)
        else:
            engine = Solo(model, train_cfg)
            our_loss = engine.step(xb, yb, 0.5)  # SGD's gradient buffers hold lr * gradient
            our_grads = {n: g / 0.5 for n, g in engine.grads().items()}
    assert np.isfinite(our_loss) and our_loss == pytest.approx(loss, rel=1e-6 if dtype == torch.float32 else 1e-12)
    assert_grads_close(our_grads, grads, rtol=1e-5 if dtype == torch.float32 else 1e-9)


def reference_step_fn(model, train_cfg):
    """The lecture's loop: autograd + torch.optim, weight decay on C and the W's only."""
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not n.startswith("b")], "weight_decay": train_cfg.weight_decay},
              {"params": [p for n, p in named if n.startswith("b")], "weight_decay": 0.0}]
    if train_cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=train_cfg.lr)
    else:
        optimizer = torch.optim.AdamW(groups, lr=train_cfg.lr, betas=train_cfg.betas, eps=1e-8)

    def step(xb, yb, lr):
        _, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        return loss.item()

    return step


def batches(X, Y, n, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ix = torch.randint(0, X.shape[0], (batch_size,), generator=g)
        yield X[ix], Y[ix]


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adamw", 0.01)])
@pytest.mark.parametrize("arch", [dict(layers=1), dict(layers=2, direct=True)])
def test_loss_curve_matches_the_autograd_loop(optimizer, lr, arch):
    cfg, train_cfg = small_cfg(hidden=32, optimizer=optimizer, lr=lr, weight_decay=0.05, batch_size=32,
                               init="scaled", **arch)
    X, Y = random_batch(cfg, 2000, seed=9)
    Y = (X[:, -1] + 1) % cfg.vocab_size  # something learnable: the next letter after the last
    ref_model, our_model = MLP(cfg, seed=1), MLP(cfg, seed=1)
    ref_step, engine = reference_step_fn(ref_model, train_cfg), Solo(our_model, train_cfg)
    ref_losses, our_losses = [], []
    for i, (xb, yb) in enumerate(batches(X, Y, 200, 32, seed=10)):
        step_lr = lr * (0.5 if i >= 100 else 1.0)  # the caller's schedule
        ref_losses.append(ref_step(xb, yb, step_lr))
        our_losses.append(engine.step(xb, yb, step_lr))
    np.testing.assert_allclose(our_losses, ref_losses, rtol=1e-4)
    assert np.mean(our_losses[-20:]) < our_losses[0] - 0.3  # it learned something
    for (name, p), (_, q) in zip(our_model.named_parameters(), ref_model.named_parameters()):
        assert p.dtype == torch.float32
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-3, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_weight_decay_shrinks_weights_but_not_biases(optimizer):
    """One step with decay = the same step without it, minus lr*wd*p for C and the W's (both
    SGD's p -= lr*(g + wd*p) and AdamW's decoupled p *= 1 - lr*wd give exactly that)."""
    xb, yb = None, None
    results = {}
    for wd in (0.0, 0.5):
        cfg, train_cfg = small_cfg(direct=True, optimizer=optimizer, weight_decay=wd)
        model = MLP(cfg, seed=1).double()
        xb, yb = random_batch(cfg, 8, seed=2)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        Solo(model, train_cfg).step(xb, yb, 0.1)
        results[wd] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name in before:
        shrink = 0.0 if name.startswith("b") else 0.1 * 0.5 * before[name]
        torch.testing.assert_close(results[0.5][name], results[0.0][name] - shrink, rtol=1e-12, atol=1e-12,
                                   msg=name)


def test_step_updates_the_model_tensors_in_place():
    cfg, train_cfg = small_cfg()
    model = MLP(cfg, seed=1)
    tensors = dict(model.named_parameters())
    before = {n: t.detach().clone() for n, t in tensors.items()}
    engine = Solo(model, train_cfg)
    loss = engine.step(*random_batch(cfg, 16, seed=2), 0.1)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert dict(model.named_parameters()) == tensors  # the same Parameter objects
    for name, t in tensors.items():
        assert not torch.equal(t, before[name]), name
        assert engine.engine.arrays[name][0].ctypes.data == t.data_ptr()


@pytest.mark.parametrize("optimizer, dropout", [("sgd", 0.0), ("adamw", 0.25)])
def test_state_dict_round_trip_continues_identically(optimizer, dropout):
    cfg, train_cfg = small_cfg(layers=2, optimizer=optimizer, lr=0.01, dropout=dropout, weight_decay=0.01)
    X, Y = random_batch(cfg, 500, seed=3)
    data = list(batches(X, Y, 60, 16, seed=4))
    model = MLP(cfg, seed=1)
    engine = Solo(model, train_cfg)
    for xb, yb in data[:30]:
        engine.step(xb, yb, 0.01)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in engine.state_dict().items()}
    if optimizer == "adamw":
        assert state["optim.step.W1"].item() == 30 and {"optim.exp_avg.W1", "optim.exp_avg_sq.C"} <= set(state)
    else:
        assert set(state) <= {"fused.dropout_rng"}  # plain SGD has no state
    assert ("fused.dropout_rng" in state) == (dropout > 0)
    first = [engine.step(xb, yb, 0.01) for xb, yb in data[30:]]

    resumed_model = MLP(cfg, seed=99)
    with torch.no_grad():
        for n, p in resumed_model.named_parameters():
            p.copy_(weights[n])
    resumed = Solo(resumed_model, train_cfg)
    resumed.load_state_dict(state)
    second = [resumed.step(xb, yb, 0.01) for xb, yb in data[30:]]
    assert first == second
    for (n, p), (_, q) in zip(model.named_parameters(), resumed_model.named_parameters()):
        assert torch.equal(p, q), n
    # without the optimizer state the continuation differs (so the test can fail)
    fresh_model = MLP(cfg, seed=99)
    with torch.no_grad():
        for n, p in fresh_model.named_parameters():
            p.copy_(weights[n])
    fresh = Solo(fresh_model, train_cfg)
    if optimizer == "sgd":  # SGD has no state: only a different dropout stream could differ
        assert [fresh.step(xb, yb, 0.01) for xb, yb in data[30:]] == first
    else:
        assert [fresh.step(xb, yb, 0.01) for xb, yb in data[30:]] != first


def _steps_agree(engine, ref_model, optimizer, batches):
    """Step the engine and torch.optim side by side; each minibatch loss must agree."""
    for xb, yb in batches:
        optimizer.zero_grad()
        ref_loss = ref_model(xb, yb)[1]
        ref_loss.backward()
        optimizer.step()
        assert engine.step(xb, yb, 0.01) == pytest.approx(ref_loss.item(), rel=1e-5)


def test_adamw_state_is_interchangeable_with_torch_optim():
    """The state carries torch.optim.AdamW's names and meaning (as AutogradEngine checkpoints
    it: 'optim.<key>.<param>'), so a run can resume with either engine."""
    cfg, train_cfg = small_cfg(optimizer="adamw", lr=0.01)
    X, Y = random_batch(cfg, 300, seed=3)
    data = list(batches(X, Y, 20, 16, seed=4))

    def torch_adamw(model):
        return torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0)

    def copy_of(model):
        twin = MLP(cfg, seed=99)
        twin.load_state_dict(model.state_dict())
        return twin

    # autograd -> fused
    ref_model = MLP(cfg, seed=1)
    optimizer = torch_adamw(ref_model)
    for xb, yb in data[:10]:
        optimizer.zero_grad()
        ref_model(xb, yb)[1].backward()
        optimizer.step()
    engine = Solo(copy_of(ref_model), train_cfg)
    engine.load_state_dict({f"optim.{k}.{n}": torch.as_tensor(v).clone()
                            for n, p in ref_model.named_parameters() for k, v in optimizer.state[p].items()})
    assert engine.engine.optimizer.t == 10
    _steps_agree(engine, ref_model, optimizer, data[10:])

    # fused -> autograd
    model = MLP(cfg, seed=1)
    engine = Solo(model, train_cfg)
    for xb, yb in data[:10]:
        engine.step(xb, yb, 0.01)
    ref_model = copy_of(model)
    optimizer = torch_adamw(ref_model)
    for n, p in ref_model.named_parameters():
        optimizer.state[p] = {k.split(".")[1]: v for k, v in engine.state_dict().items() if k.endswith("." + n)}
    _steps_agree(engine, ref_model, optimizer, data[10:])


def test_dropout_masks_keep_the_expected_fraction_and_scale():
    cfg, train_cfg = small_cfg(hidden=200, dropout=0.3)
    engine = FusedEngine([MLP(cfg)], [train_cfg])
    ws = engine._workspace(256)

    def draw():
        fused_engine.draw_masks(engine.rngs[0], engine.drop_below, engine.keep_scale, ws.keep, ws.masks)

    draw()
    mask = ws.masks[0]
    kept = mask > 0
    assert abs(kept.mean() - 0.7) < 0.01
    assert np.all(mask[kept] == np.float32(engine.keep_scale))
    assert abs(engine.keep_scale - 1 / 0.7) < 1e-4
    assert abs((1 - engine.drop_below / 2**16) * engine.keep_scale - 1) < 1e-12  # E[mask] = 1
    draw()
    assert not np.array_equal(ws.masks[0] > 0, kept)  # a fresh mask each step


def test_dropout_step_equals_the_pure_function_with_the_engine_mask():
    """With dropout 0.25 the engine's mask scale 2^16/(2^16 - 16384) is exactly 1/(1 - 0.25)."""
    cfg, train_cfg = small_cfg(layers=2, dropout=0.25, optimizer="sgd", lr=0.1)
    model = MLP(cfg, seed=1).double()
    engine = Solo(model, train_cfg)
    xb, yb = random_batch(cfg, 24, seed=2)
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    loss = engine.step(xb, yb, 0.1)
    keep = [m > 0 for m in engine.engine._workspace(24).masks]
    expected_loss, grads = loss_and_grads(before, xb, yb, cfg, dropout_mask=keep)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), before[name] - 0.1 * grads[name], rtol=1e-10, atol=1e-12)


def test_unsupported_reason():
    model_cfg, train_cfg = make_configs("lecture")
    assert unsupported_reason(model_cfg, train_cfg) is None
    _, cuda = make_configs("lecture", device="cuda")
    assert unsupported_reason(model_cfg, cuda) == "device cuda"
    _, auto = make_configs("lecture", device="auto")
    assert (unsupported_reason(model_cfg, auto) is None) == (not torch.cuda.is_available())
    with pytest.raises(ValueError, match="cuda"):
        FusedEngine([MLP(model_cfg)], [cuda])
    gru_cfg, gru_train = make_configs(model="gru") if "gru" in makemore.models.REGISTRY else (None, None)
    if gru_cfg is not None:
        assert "MLP only" in unsupported_reason(gru_cfg, gru_train)


def test_loss_and_grads_checks_shapes_and_masks():
    cfg, _ = small_cfg(dropout=0.1)
    params = {n: np.zeros(s) for n, s in param_shapes(cfg).items()}
    xb, yb = random_batch(cfg, 4, seed=0)
    loss, _ = loss_and_grads(params, xb, yb, cfg)
    assert loss == pytest.approx(np.log(cfg.vocab_size))  # all-zero weights: uniform prediction
    with pytest.raises(ValueError, match="one dropout mask per hidden layer"):
        loss_and_grads(params, xb, yb, cfg, dropout_mask=[np.ones((4, 16))] * 2)
    params["W1"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="W1"):
        loss_and_grads(params, xb, yb, cfg)
