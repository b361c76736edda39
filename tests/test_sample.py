"""Batched sampling: reproducible with a seed, and distributed as the model says.

The distribution check is a chi-square goodness-of-fit test on the first character of many
samples: every sample starts from the all-boundary context, so the model's own softmax at that
context is the exact distribution the first characters must follow.
"""

import math

import numpy as np
import pytest
import torch

import makemore as mm


@pytest.fixture(scope="module")
def setup():
    vocab = mm.Vocab.from_words(["abcdefghijklmnopqrstuvwxyz"])
    model_cfg, _ = mm.make_configs("tiny2d", vocab_size=vocab.size, init="scaled")
    model = mm.MLP(model_cfg, seed=3)
    with torch.no_grad():  # a lopsided distribution (p from ~0.3% to ~20%) with every bin well filled
        model.b_out.copy_(torch.linspace(-3.0, 3.0, vocab.size))
    return vocab, mm.model_predictor(model)


def chi_square_critical(df: int, z: float = 3.72) -> float:
    """Upper quantile of chi-square(df) by Wilson-Hilferty; z = 3.72 is the 0.9999 normal quantile."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def first_char_chi_square(vocab, predictor, n, seed, temperature=1.0):
    words = mm.sample(predictor, vocab, n=n, seed=seed, temperature=temperature, max_len=1)
    counts = np.zeros(vocab.size)
    for w in words:
        counts[vocab.encode(w[0])[0] if w else 0] += 1
    with torch.no_grad():
        logp = predictor(torch.zeros((1, predictor.context_size), dtype=torch.long))[0].double()
    expected = torch.softmax(logp / temperature, dim=0).numpy() * n
    # pool the rare characters into one bin: the test needs >= 5 expected per bin
    rare = expected < 5
    obs = np.append(counts[~rare], counts[rare].sum())
    exp = np.append(expected[~rare], expected[rare].sum())
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    return float(((obs - exp) ** 2 / exp).sum()), len(obs) - 1


def test_same_seed_same_samples(setup):
    vocab, predictor = setup
    a = mm.sample(predictor, vocab, n=200, seed=7)
    assert a == mm.sample(predictor, vocab, n=200, seed=7)
    assert a != mm.sample(predictor, vocab, n=200, seed=8)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_first_characters_follow_the_model(setup, temperature):
    vocab, predictor = setup
    stat, df = first_char_chi_square(vocab, predictor, n=40_000, seed=11, temperature=temperature)
    assert df >= 5
    assert stat < chi_square_critical(df), f"chi-square {stat:.1f} on {df} degrees of freedom"


def test_chi_square_catches_a_wrong_temperature(setup):
    """The check has teeth: samples at temperature 1 do not fit the temperature-2 distribution."""
    vocab, predictor = setup
    words = mm.sample(predictor, vocab, n=40_000, seed=11, temperature=1.0, max_len=1)
    counts = np.zeros(vocab.size)
    for w in words:
        counts[vocab.encode(w[0])[0] if w else 0] += 1
    with torch.no_grad():
        logp = predictor(torch.zeros((1, predictor.context_size), dtype=torch.long))[0].double()
    expected = torch.softmax(logp / 2.0, dim=0).numpy() * counts.sum()
    keep = expected >= 5
    stat = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    assert stat > chi_square_critical(int(keep.sum()) - 1)


def test_samples_keep_the_prefix_and_end_at_the_boundary(setup):
    vocab, predictor = setup
    words = mm.sample(predictor, vocab, n=100, seed=1, prefix="ab", max_len=8)
    assert all(w.startswith("ab") and vocab.boundary not in w for w in words)
    assert all(len(w) <= 2 + 8 for w in words)


@pytest.mark.parametrize("layers,direct,init", [(1, False, "randn"), (2, True, "scaled"), (1, True, "randn")])
def test_table_logits_equal_the_model(layers, direct, init):
    """Sampling and scoring read the first layer (and direct connections) from per-position
    tables; they must give the model's own logits."""

    model_cfg, _ = mm.make_configs("lecture", vocab_size=27, layers=layers, direct=direct, init=init)
    model = mm.MLP(model_cfg, seed=5).double().eval()
    with torch.no_grad():
        model.W_direct.normal_() if direct else None
        x = torch.randint(0, 27, (300, model_cfg.block_size), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(model.logits_fn()(x), model(x)[0], rtol=1e-10, atol=1e-10)
