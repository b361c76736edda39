"""The model against independent references: one-hot algebra, the softmax formula, and
finite differences."""

import torch
import torch.nn.functional as F

from makemore.config import make_configs
from makemore.data import Examples, Vocab
from makemore.models.mlp import MLP, count_params
from makemore.predict import model_predictor, split_nll


def test_parameter_counts_of_the_lecture_presets():
    lecture, _ = make_configs("lecture")
    tiny, _ = make_configs("tiny2d")
    assert count_params(lecture) == 11897 == MLP(lecture).num_params()
    assert count_params(tiny) == 3481 == MLP(tiny).num_params()


def test_embedding_lookup_equals_one_hot_matmul():
    C = torch.randn(27, 10, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 27, (64, 3), generator=torch.Generator().manual_seed(1))
    one_hot = F.one_hot(x, num_classes=27).float()
    assert torch.allclose(one_hot @ C, C[x], atol=1e-6)


def test_cross_entropy_is_mean_negative_log_softmax_and_stable():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 27, generator=g) * 3
    y = torch.randint(0, 27, (32,), generator=g)
    counts = logits.exp()
    probs = counts / counts.sum(1, keepdim=True)
    manual = -probs[torch.arange(32), y].log().mean()
    assert torch.allclose(F.cross_entropy(logits, y), manual, atol=1e-5)
    # the naive formula overflows once every logit is shifted by +100; cross_entropy does not
    shifted = F.cross_entropy(logits + 100, y)
    assert torch.isfinite(shifted) and torch.allclose(shifted, manual, atol=1e-4)
    assert not torch.isfinite((logits + 100).double().exp().float().sum())


def _gradcheck(**overrides):
    cfg, _ = make_configs("lecture", vocab_size=7, block_size=3, emb_dim=4, hidden=5, **overrides)
    model = MLP(cfg, seed=0).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (6, 3), generator=g)
    y = torch.randint(0, 7, (6,), generator=g)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]

    def loss_of(*tensors):
        return torch.func.functional_call(model, dict(zip(names, tensors)), (x, y))[1]

    assert torch.autograd.gradcheck(loss_of, tuple(params), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradients_match_finite_differences():
    _gradcheck()


def test_gradients_match_finite_differences_deep_with_direct_links():
    _gradcheck(layers=2, direct=True, init="scaled")


def test_same_seed_same_weights_and_different_seed_differs():
    cfg, _ = make_configs("default", vocab_size=27)
    a, b, c = MLP(cfg, seed=3), MLP(cfg, seed=3), MLP(cfg, seed=4)
    for (n, p), (_, q), (_, r) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(p, q), n
    assert not torch.equal(a.W1, c.W1)


def test_mean_nll_of_a_uniform_model_is_log_vocab():
    vocab = Vocab.from_words(["abcdefghijklmnopqrstuvwxyz"])
    cfg, _ = make_configs("default", vocab_size=vocab.size)
    model = MLP(cfg)
    with torch.no_grad():
        model.W_out.zero_()
        model.b_out.zero_()
    examples = Examples.from_words(["emma", "olivia", "ava", "zz"], vocab)
    assert abs(split_nll(model_predictor(model), examples) - torch.log(torch.tensor(27.0)).item()) < 1e-5


def test_the_inference_tables_compute_the_forward_pass():
    """logits_fn (per-position tables C @ W1_t) equals forward() for every shape option."""
    for overrides in ({}, {"layers": 2, "direct": True}):
        cfg, _ = make_configs("lecture", vocab_size=11, emb_dim=4, hidden=16, init="scaled", **overrides)
        model = MLP(cfg, seed=5).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
            ctx = torch.randint(0, 11, (50, cfg.block_size), generator=torch.Generator().manual_seed(0))
            torch.testing.assert_close(model.logits_fn()(ctx), model(ctx)[0], rtol=1e-5, atol=1e-5)
