"""Sampling: distributed as the model says, the same whatever the chunking, repeatable with a
seed, bounded in memory whatever n is; and the `sample` command streaming it.

The distribution checks are chi-square tests. On the first character against the exact
distribution: every sample starts from the all-boundary context, so the model's own softmax
there is what the first characters must follow. On first characters and lengths together
against an independent reference sampler (the model's own forward pass and
torch.multinomial, one batch): a two-sample test, since the distribution of lengths has no
closed form. Each test is shown to reject a wrong distribution.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import makemore as mm
from makemore import conditions, sampling
from makemore.conditions import Constraints
from makemore.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny products, one thread

RAW = Constraints(min_len=0)  # the model's own distribution, the empty word included (the default leaves it out)


@pytest.fixture(scope="module")
def setup():
    vocab = mm.Vocab.from_words(["abcdefghijklmnopqrstuvwxyz"])
    model_cfg, _ = mm.make_configs("tiny2d", vocab_size=vocab.size, init="scaled")
    model = mm.MLP(model_cfg, seed=3)
    with torch.no_grad():  # a lopsided distribution (p from ~0.3% to ~20%) with every bin well filled
        model.b_out.copy_(torch.linspace(-3.0, 3.0, vocab.size))
    return vocab, mm.model_predictor(model)


@pytest.fixture(scope="module")
def ending():
    """A model whose next character depends strongly on the last two (direct links from
    one-hot embeddings: random bigram and skip-gram logits), and whose words end after ~10
    characters, from 0 to the 64 cap: first characters and lengths worth testing, which a
    mistake in the contexts would change."""
    vocab = mm.Vocab.from_words(["abcdefghijklmnopqrstuvwxyz"])
    V = vocab.size
    model_cfg, _ = mm.make_configs("tiny2d", vocab_size=V, emb_dim=V, direct=True, init="scaled")
    T = model_cfg.block_size
    model = mm.MLP(model_cfg, seed=3).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.C.copy_(torch.eye(V))
        W = torch.zeros(T * V, V)
        W[(T - 1) * V:] = 2.0 * torch.randn(V, V, generator=g)  # the last character
        W[(T - 2) * V:(T - 1) * V] = torch.randn(V, V, generator=g)  # the one before
        model.W_direct.copy_(W)
        model.b_out.copy_(torch.linspace(-2.0, 2.0, V))
        model.b_out[0] = 2.0
    return vocab, model


def chi_square_critical(df: int, z: float = 3.72) -> float:
    """Upper quantile of chi-square(df) by Wilson-Hilferty; z = 3.72 is the 0.9999 normal quantile."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def first_char_chi_square(vocab, predictor, n, seed, temperature=1.0):
    words = mm.sample(predictor, vocab, n=n, seed=seed, temperature=temperature, max_len=1, constraints=RAW)
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


def two_sample_chi_square(a, b) -> tuple[float, int]:
    """Do counts a and b over the same bins come from one distribution? Bins with fewer than
    10 counts in all are pooled into one."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    small = (a + b) < 10
    a, b = np.append(a[~small], a[small].sum()), np.append(b[~small], b[small].sum())
    keep = (a + b) > 0
    a, b = a[keep], b[keep]
    ka, kb = math.sqrt(b.sum() / a.sum()), math.sqrt(a.sum() / b.sum())
    return float(((ka * a - kb * b) ** 2 / (a + b)).sum()), len(a) - 1


def reference_sample(model, n, seed, temperature=1.0, max_len=64):
    """First character ids and lengths of n samples by the plainest method: the model's own
    forward pass, softmax and torch.multinomial, all samples at once."""
    g = torch.Generator().manual_seed(seed)
    ctx = torch.zeros((n, model.cfg.block_size), dtype=torch.long)
    first, length = torch.zeros(n, dtype=torch.long), torch.full((n,), max_len)
    alive = torch.arange(n)
    with torch.no_grad():
        for t in range(max_len):
            logits, _ = model(ctx[alive])
            ix = torch.multinomial(torch.softmax(logits.double() / temperature, 1), 1, generator=g).squeeze(1)
            if t == 0:
                first[alive] = ix
            length[alive[ix == 0]] = t
            ctx[alive] = torch.cat([ctx[alive, 1:], ix[:, None]], 1)
            alive = alive[ix != 0]
            if len(alive) == 0:
                break
    return (np.bincount(first.numpy(), minlength=model.cfg.vocab_size),
            np.bincount(length.numpy(), minlength=max_len + 1))


def histograms(words, vocab, max_len=64):
    first = [vocab.encode(w[0])[0] if w else 0 for w in words]
    return np.bincount(first, minlength=vocab.size), np.bincount([len(w) for w in words], minlength=max_len + 1)


# ----------------------------------------------------------------------------------------
# The distribution


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


@pytest.mark.parametrize("route", ["table", "direct"])
def test_chunked_samples_follow_the_reference(ending, route, monkeypatch):
    """Drawn in chunks of 997, by the all-contexts table or by a forward pass per step, the
    first characters and the lengths are distributed as the reference sampler's."""
    vocab, model = ending
    if route == "direct":
        monkeypatch.setattr(sampling, "TABLE_CELLS", 0)
    n = 40_000
    chunks = list(sampling.sample_chunks(mm.model_predictor(model), vocab, n, seed=5, chunk_size=997, constraints=RAW))
    assert all(len(words) <= 997 for words, _ in chunks)
    ours = histograms([w for words, _ in chunks for w in words], vocab)
    reference = reference_sample(model, n, seed=6)
    for what, a, b in zip(("first characters", "lengths"), ours, reference):
        stat, df = two_sample_chi_square(a, b)
        assert df >= 10, what
        assert stat < chi_square_critical(df), f"{what}: chi-square {stat:.1f} on {df} degrees of freedom"


def test_two_sample_check_catches_a_wrong_temperature(ending):
    """The two-sample check has teeth: temperature 1.15 against the reference at 1."""
    vocab, model = ending
    words = mm.sample(mm.model_predictor(model), vocab, 40_000, seed=5, temperature=1.15, constraints=RAW)
    ours, reference = histograms(words, vocab), reference_sample(model, 40_000, seed=6)
    for a, b in zip(ours, reference):
        stat, df = two_sample_chi_square(a, b)
        assert stat > chi_square_critical(df)


# ----------------------------------------------------------------------------------------
# Seeds and chunks


@pytest.mark.parametrize("route", ["table", "direct"])
def test_chunking_never_changes_the_samples(ending, route, monkeypatch):
    """Sample i reads only the random numbers of index i: any chunk size gives the same words,
    and a smaller n the first words of a larger one. (float64 model: its logits do not
    depend on the batch size in their float32 digits, so the direct route is exact too.)"""
    vocab, model = ending
    if route == "direct":
        monkeypatch.setattr(sampling, "TABLE_CELLS", 0)
    predictor = mm.model_predictor(model.double())
    try:
        def words(n, chunk_size=None):
            chunks = sampling.sample_chunks(predictor, vocab, n, seed=9, chunk_size=chunk_size)
            return [w for ws, _ in chunks for w in ws]

        reference = words(3_000)
        assert words(300, chunk_size=7) == reference[:300]
        assert words(3_000, chunk_size=1000) == reference
        assert words(100) == reference[:100]  # its table rows computed as reached, not all up front
        assert words(3_000) == reference
        assert words(3_000) != [w for ws, _ in sampling.sample_chunks(predictor, vocab, 3_000, seed=10) for w in ws]
    finally:
        model.float()


def test_the_first_chunks_are_small_and_grow(ending):
    """A stream of 10^9 starts with a chunk of FIRST_CHUNK samples, each next twice the last:
    the first line is written at once (a first chunk of 65,536 took 6 s with a model mixed with
    its count model), and the samples are those of one draw of all of them."""
    vocab, model = ending
    predictor = mm.model_predictor(model)
    chunks = sampling.sample_chunks(predictor, vocab, 10**9, seed=1, constraints=RAW)
    drawn = [next(chunks)[0] for _ in range(4)]
    assert [len(words) for words in drawn] == [64, 128, 256, 512]
    assert [w for words in drawn for w in words] == mm.sample(predictor, vocab, 960, seed=1, constraints=RAW)


def test_no_array_grows_with_n(setup):
    """Starting a stream of 10^12 samples and drawing its first chunk allocates no more than
    for 10^5 (NumPy reports its allocations to tracemalloc), and every chunk is bounded."""
    vocab, predictor = setup

    def first_chunk(n):
        tracemalloc.start()
        chunks = sampling.sample_chunks(predictor, vocab, n, seed=1, constraints=RAW)
        words, _ = next(chunks)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return words, peak, chunks

    small_words, small_peak, _ = first_chunk(10**5)
    words, peak, chunks = first_chunk(10**12)
    assert words == small_words and len(words) == sampling.FIRST_CHUNK
    assert peak < small_peak + (1 << 20), (peak, small_peak)
    sizes = [len(next(chunks)[0]) for _ in range(12)]  # doubling to a whole chunk, and no further
    assert sizes == [sampling.FIRST_CHUNK << k for k in range(1, 11)] + [sampling.MAX_CHUNK] * 2


def test_a_max_len_condition_replaces_the_cap(ending):
    """Constraints(max_len=200) gives samples of up to 200 characters, where the cap of 64 cut
    them before: exactly the samples under a far cap that are no longer, in order."""
    vocab, model = ending
    predictor = mm.model_predictor(model)
    words = mm.sample(predictor, vocab, 3000, seed=2, constraints=Constraints(min_len=0, max_len=200))
    assert max(map(len, words)) > 64
    far = mm.sample(predictor, vocab, 4000, seed=2, max_len=5000, constraints=RAW)
    assert words == [w for w in far if len(w) <= 200][:3000]
    capped = mm.sample(predictor, vocab, 3000, seed=2, constraints=RAW)  # the cap: cut at exactly 64
    assert max(map(len, capped)) == 64 and [w[:64] for w in far[:3000]] == capped


def test_a_large_vocabulary_keeps_chunks_small():
    """4,000 characters: a chunk holds at most CHUNK_CELLS / 4,000 samples, so the per-step
    (chunk x vocab) arrays stay bounded; the words use the vocabulary's characters."""
    rng = np.random.default_rng(0)
    chars = "".join(chr(0x4E00 + i) for i in range(3999))
    vocab = mm.Vocab.from_words([chars])
    assert vocab.size == 4000
    # the full softmax, whose output bias b_out sets the distribution below (auto would take the adaptive one)
    model_cfg, _ = mm.make_configs("tiny2d", vocab_size=vocab.size, init="scaled", softmax="full")
    model = mm.MLP(model_cfg, seed=0)
    with torch.no_grad():
        model.b_out.copy_(torch.from_numpy(rng.normal(size=vocab.size)).float())
        model.b_out[0] = 8.0  # short words, so the test is quick
    chunks = sampling.sample_chunks(mm.model_predictor(model), vocab, 10**9, seed=2, constraints=RAW)
    limit = sampling.CHUNK_CELLS // vocab.size
    sizes = []
    for _ in range(8):  # 64, 128, ... doubling up to the limit, and no further
        words, _ = next(chunks)
        sizes.append(len(words))
        assert set("".join(words)) <= set(chars) and any(words)
    assert sizes == [64, 128, 256, 512, 1024, limit, limit, limit]


def test_unique_and_new_only(ending):
    vocab, model = ending
    predictor = mm.model_predictor(model)
    words = mm.sample(predictor, vocab, 3000, seed=1)
    splits = {"train": words[:1000], "dev": words[1000:1100], "test": []}
    tagged = mm.sample_tagged(predictor, vocab, splits, 500, seed=1, unique=True, new_only=True)
    texts = [t["text"] for t in tagged]
    assert len(texts) == 500 and len(set(texts)) == 500
    assert all(t["tag"] == "new" and t["text"] not in splits["train"] + splits["dev"] for t in tagged)
    plain = mm.sample_tagged(predictor, vocab, splits, 3000, seed=1)
    assert [t["text"] for t in plain] == words  # the same stream, tagged
    assert [t["tag"] for t in plain[:1000]] == ["train"] * 1000


def test_unique_gives_up_when_the_model_has_no_more(setup):
    """A model that can only write '' and 'a' (max_len 1, two characters) has two unique words."""
    vocab = mm.Vocab.from_words(["a"])
    model_cfg, _ = mm.make_configs("tiny2d", vocab_size=vocab.size)
    predictor = mm.model_predictor(mm.MLP(model_cfg))
    tagged = mm.sample_tagged(predictor, vocab, {"train": [], "dev": [], "test": []}, 10, seed=0,
                              unique=True, max_len=1, constraints=RAW)
    assert sorted(t["text"] for t in tagged) == ["", "a"]


def test_unique_gives_up_where_new_words_become_too_rare_to_find_the_rest():
    """A stream of 700 possible words, most of them rare (Zipf), asked for 3,000 unique ones:
    it ends once the words seen once say the rest would take ten times the samples so far (Good
    and Turing), not after a run of repeats that each rare new word restarts."""
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, 701) ** 1.5
    words = [f"w{i}" for i in range(700)]
    stream = conditions.Stream(3000, np.uint64(0), None, unique=True)
    while not stream.done:
        stream.take([words[i] for i in rng.choice(700, stream.count(4096), p=weights / weights.sum())], None)
    assert stream.exhausted and 600 < stream.made < 700
    assert stream.drawn < 150_000  # a run of 300,000 repeats (stream.patience) ended after 458,752 draws
    assert conditions.UNIQUE_MORE * stream.once < stream.made  # ten times the samples would not double them


def test_samples_keep_the_prefix_and_end_at_the_boundary(setup):
    vocab, predictor = setup
    words = mm.sample(predictor, vocab, n=100, seed=1, prefix="ab", max_len=8)
    assert all(w.startswith("ab") and vocab.boundary not in w for w in words)
    assert all(len(w) <= 2 + 8 for w in words)


@pytest.mark.parametrize("use, message", [
    (lambda p, v: mm.score(p, v, "emma"), "list of words, got the string 'emma'"),
    (lambda p, v: mm.score(p, v, [5]), "every one a string"),
    (lambda p, v: mm.sample(p, v, n=3, prefix=5), "prefix must be a string"),
    (lambda p, v: mm.sample(p, v, n=3, constraints={"suffix": "a"}), "constraints must be a Constraints"),
    (lambda p, v: Constraints(exclude="emma"), "got the string 'emma'"),
    (lambda p, v: Constraints(exclude=[1, 2]), "every one a string"),
    (lambda p, v: Constraints(exclude=5), "collection of words"),
    (lambda p, v: Constraints(suffix=3), "suffix must be a string"),
    (lambda p, v: mm.sample(p, v, n="5"), "must be a whole number, got '5'"),
    (lambda p, v: mm.score(p, v, ["ab"], top=-1), "top must be a whole number, 0 or more, got -1"),
    (lambda p, v: mm.load_corpus("names", seed="x"), "seed must be a whole number, got 'x'"),
    (lambda p, v: mm.load_corpus(["emma", "ava"]), "give its path"),
    (lambda p, v: mm.sample(p, v, n=3, seed="a"), "seed must be a whole number, got 'a'"),
    (lambda p, v: mm.sample(p, v, n=2, seed=1, top_k=2.5), "top-k must be a whole number, at least 1, got 2.5"),
    (lambda p, v: mm.sample(p, v, n=2, seed=1, temperature="1"), "temperature must be a positive number, got '1'"),
    (lambda p, v: mm.sample(p, v, n=2, seed=1, max_len="5"), "max_len must be a whole number between 1 and"),
])
def test_arguments_of_the_wrong_type_are_one_clear_error(setup, use, message):
    """A string where a list of words belongs would be read as one-letter words (score 'e', 'm',
    'm', 'a'; exclude 'e', 'm', 'a'): refused, as other wrong types are, with what to give."""
    vocab, predictor = setup
    with pytest.raises(mm.UserError, match=re.escape(message)):
        use(predictor, vocab)


def test_a_vocabulary_of_another_size_is_refused(setup):
    """A predictor given another corpus's vocabulary would read its ids as other characters and
    write (or score) that corpus's symbols: one error line naming both sizes."""
    vocab, predictor = setup
    other = mm.Vocab.from_words(["abcdefghijklmnopqrstuvwxyzαβγ"])
    message = f"the vocabulary has {other.size} symbols and the predictor predicts {vocab.size}"
    with pytest.raises(mm.UserError, match=message):
        mm.sample(predictor, other, n=2, seed=1)
    with pytest.raises(mm.UserError, match=message):
        mm.score(predictor, other, ["ab"])
    with pytest.raises(mm.UserError, match=f"vocabulary of {other.size} symbols and the predictor predicts"):
        mm.split_nll(predictor, mm.Examples.from_words(["ab", "ba"], other))


@pytest.mark.parametrize("route", ["table", "direct"])
@pytest.mark.parametrize("temperature", [1e-3, 1e-30, 1e-60, 1e-100, 5e-324])
def test_a_tiny_temperature_is_greedy_decoding(route, temperature, monkeypatch):
    """A temperature below float32's range (1e-100) was 0 there: NaNs, and the last character
    64 times. Every tiny temperature gives the greedy word, 'ba' here (the likeliest character
    at each step), by either route."""
    if route == "direct":
        monkeypatch.setattr(sampling, "TABLE_CELLS", 0)
    vocab = mm.Vocab.from_words(["abc"])  # boundary, a, b, c
    probs = torch.tensor([[0.05, 0.2, 0.5, 0.25],  # after the boundary: b
                          [0.7, 0.1, 0.1, 0.1],  # after a: the end
                          [0.1, 0.6, 0.2, 0.1],  # after b: a
                          [0.4, 0.1, 0.1, 0.4]])
    predictor = mm.make_predictor(lambda ctx: probs.log()[ctx[:, -1]], 1, "cpu", vocab.size)
    assert mm.sample(predictor, vocab, n=3, seed=1, temperature=temperature) == ["ba"] * 3
    table = sampling.context_table(predictor, vocab, temperature)
    [drawn] = sampling.sample_streams(predictor, vocab, {s: [] for s in ("train", "dev", "test")}, [(2, 1)],
                                      temperature=temperature, table=table)
    assert [d["text"] for d in drawn] == ["ba"] * 2


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=2**40 + 1), dict(temperature=0.0), dict(temperature=float("inf")),
                                    dict(top_k=0), dict(prefix="a."), dict(prefix="A")])
def test_bad_arguments_are_user_errors(setup, kwargs):
    vocab, predictor = setup
    with pytest.raises(mm.UserError):
        mm.sample(predictor, vocab, **{"n": 5, **kwargs})


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


# ----------------------------------------------------------------------------------------
# Conditions: suffix, contains, lengths, exclude
#
# What "the samples follow the model's distribution given the conditions" means: a word w that
# meets them is drawn with probability P(w) / P(conditions), any other never. The tests below
# check it exactly, against every word of a small model enumerated with its probability, and
# show that the two cheaper ways to enforce a length (masking the end token below the minimum,
# forcing it at the maximum) fail the same check: they give other distributions.


CHAIN_CAP = 8  # the sampler's max_len for the chain: words of up to 8 characters, longer ones cut


@pytest.fixture(scope="module")
def chain():
    """A hand-made predictor over 'a' and 'b' that reads the last two characters, with known
    next-character probabilities: a word usually ends after an 'a' and seldom after a 'b', the
    case where masking the end token is furthest from conditioning."""
    vocab = mm.Vocab.from_words(["ab"])  # boundary, a, b
    rng = np.random.default_rng(1)
    probs = np.zeros((3, 3, 3))  # [c1, c2, next]: next (end, a, b) after the characters c1 c2 (0: the boundary)
    for c1 in range(3):
        for c2 in range(3):
            end = {0: 0.2, 1: 0.6, 2: 0.08}[c2]
            probs[c1, c2] = [end, *(rng.dirichlet([2.0, 2.0]) * (1 - end))]
    logp = torch.tensor(np.log(probs), dtype=torch.float32)
    predictor = mm.make_predictor(lambda ctx: logp[ctx[:, -2], ctx[:, -1]], 2, "cpu", vocab.size)
    return vocab, predictor, probs


def chain_words(probs, prefix="", mask_below=0, force_at=None):
    """Every word the chain can write after `prefix` (at most CHAIN_CAP more characters, as the
    sampler cuts them) with its probability under sampling: exact by default; with mask_below m,
    the end token masked (and the rest renormalised) while the word is shorter than m; with
    force_at M, the end forced once the word has M characters (the two wrong ways)."""
    ids = {"a": 1, "b": 2}
    out = {}

    def grow(word, p):
        ctx = ([0, 0] + [ids[c] for c in word])[-2:]
        row = probs[ctx[0], ctx[1]].copy()
        if len(word) - len(prefix) == CHAIN_CAP:  # the sampler's cap: the word is cut, as it is
            out[word] = out.get(word, 0) + p
            return
        if force_at is not None and len(word) >= force_at:
            row = np.array([1.0, 0.0, 0.0])
        elif len(word) < mask_below:
            row[0] = 0.0
            row /= row.sum()
        out[word] = out.get(word, 0) + p * row[0]
        for c in "ab":
            grow(word + c, p * row[ids[c]])

    grow(prefix, 1.0)  # the prefix is given, not drawn
    return out


def conditioned(dist, ok):
    """dist restricted to the words that meet `ok`, renormalised."""
    kept = {w: p for w, p in dist.items() if ok(w)}
    total = sum(kept.values())
    return {w: p / total for w, p in kept.items()}


def chi_square_against(words, expected: dict) -> tuple[float, int]:
    """Goodness of fit of the words drawn to the exact distribution (a word outside it fails at
    once); words expected fewer than 5 times pooled into one bin."""
    assert set(words) <= set(expected), set(words) - set(expected)
    n = len(words)
    counts = {w: 0 for w in expected}
    for w in words:
        counts[w] += 1
    obs = np.array([counts[w] for w in expected], dtype=float)
    exp = np.array([expected[w] * n for w in expected])
    rare = exp < 5
    obs, exp = np.append(obs[~rare], obs[rare].sum()), np.append(exp[~rare], exp[rare].sum())
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    return float(((obs - exp) ** 2 / exp).sum()), len(obs) - 1


CHAIN_CASES = {
    "lengths, suffix, contains": dict(prefix="", conditions=conditions.Constraints(suffix="b", contains="ab", min_len=3,
                                                                                max_len=6)),
    "prefix, lengths, exclude": dict(prefix="b", conditions=conditions.Constraints(min_len=3, max_len=5,
                                                                                exclude={"bab", "bbbb"})),
    "a minimum only": dict(prefix="", conditions=conditions.Constraints(min_len=4)),
}


def meets(word, prefix, c):
    """The conditions, spelt out independently of Constraints.meets."""
    return (word.startswith(prefix) and len(word) >= c.min_len and (c.max_len is None or len(word) <= c.max_len)
            and word.endswith(c.suffix) and c.contains in word and word not in c.exclude)


@pytest.mark.parametrize("case", CHAIN_CASES)
def test_conditioned_samples_follow_the_exact_conditional_distribution(chain, case):
    """20,000 samples under conditions, against every word's exact probability given them:
    P(w | conditions) = P(w) / P(conditions). The same test rejects draws from what masking the
    end token below the minimum, or forcing it at the maximum, would give instead."""
    vocab, predictor, probs = chain
    prefix, c = CHAIN_CASES[case]["prefix"], CHAIN_CASES[case]["conditions"]
    ok = lambda w: meets(w, prefix, c)  # noqa: E731
    exact = conditioned(chain_words(probs, prefix), ok)
    words = mm.sample(predictor, vocab, 20_000, seed=12, prefix=prefix, max_len=CHAIN_CAP, constraints=c)
    assert len(words) == 20_000 and all(ok(w) for w in words)
    stat, df = chi_square_against(words, exact)
    assert df >= 8, df
    assert stat < chi_square_critical(df), f"chi-square {stat:.1f} on {df} degrees of freedom"

    rng = np.random.default_rng(0)
    wrong = {"masking the end below the minimum": chain_words(probs, prefix, mask_below=c.min_len)}
    if c.max_len is not None:
        wrong["forcing the end at the maximum"] = chain_words(probs, prefix, force_at=c.max_len)
    for what, dist in wrong.items():
        q = conditioned(dist, ok)
        tv = 0.5 * sum(abs(q.get(w, 0) - exact.get(w, 0)) for w in set(q) | set(exact))
        drawn = list(rng.choice(list(q), size=20_000, p=np.array(list(q.values()))))
        stat, df = chi_square_against(drawn, exact)
        assert stat > chi_square_critical(df), f"{what} (total variation {tv:.3f}) passed: {stat:.1f} on {df}"


def test_masking_is_not_conditioning(chain):
    """Why lengths are enforced by rejection: the words of 4 or more characters that masking the
    end gives are not distributed as the model's words of 4 or more characters (total variation
    between the two, exact), whereas conditioning rescales every such word by the same factor."""
    _, _, probs = chain
    exact = chain_words(probs)
    long = conditioned(exact, lambda w: len(w) >= 4)
    masked = conditioned(chain_words(probs, mask_below=4), lambda w: len(w) >= 4)
    ratios = {w: long[w] / exact[w] for w in long}
    assert max(ratios.values()) == pytest.approx(min(ratios.values()))  # P(w | len >= 4) ∝ P(w)
    assert 0.5 * sum(abs(masked[w] - long[w]) for w in long) > 0.1


@pytest.mark.parametrize("route", ["table", "direct"])
def test_conditions_keep_exactly_the_plain_streams_samples_that_meet_them(ending, route, monkeypatch):
    """Under conditions, a seed's samples are the samples of its plain stream that meet them, in
    order (plain rejection sampling on the same random numbers), whatever the chunk size; a
    sample too long is dropped while drawn, no other is touched. float64 model, as in
    test_chunking_never_changes_the_samples."""
    vocab, model = ending
    if route == "direct":
        monkeypatch.setattr(sampling, "TABLE_CELLS", 0)
    predictor = mm.model_predictor(model.double())
    try:
        plain = mm.sample(predictor, vocab, 20_000, seed=4)
        c = conditions.Constraints(suffix="u", contains="x", min_len=5, max_len=11, exclude=set(plain[:3000]))
        expected = [w for w in plain if meets(w, "", c)]
        assert 100 < len(expected) < 5000 and len(set(len(w) for w in expected)) >= 5
        for chunk_size in (None, 997, 64):
            chunks = sampling.sample_chunks(predictor, vocab, len(expected), seed=4, constraints=c, chunk_size=chunk_size)
            assert [w for words, _ in chunks for w in words] == expected, chunk_size
        assert mm.sample(predictor, vocab, 50, seed=4, constraints=c) == expected[:50]
    finally:
        model.float()


def test_conditioned_samples_follow_an_independent_rejection_sampler(ending):
    """Two-sample check against plain rejection with the model's own forward pass and
    torch.multinomial: words of 5 to 8 characters containing 'x', their lengths, first and last
    characters."""
    vocab, model = ending
    c = conditions.Constraints(contains="x", min_len=5, max_len=8)
    ours = mm.sample(mm.model_predictor(model), vocab, 6000, seed=21, constraints=c)
    g = torch.Generator().manual_seed(22)
    reference = []
    while len(reference) < 6000:
        ctx = torch.zeros((20_000, model.cfg.block_size), dtype=torch.long)
        ids = torch.zeros((20_000, 9), dtype=torch.long)
        alive = torch.arange(20_000)
        with torch.no_grad():
            for t in range(9):  # a word of at most 8 characters ends by step 8
                ix = torch.multinomial(torch.softmax(model(ctx[alive])[0].double(), 1), 1, generator=g).squeeze(1)
                ids[alive, t] = ix
                ctx[alive] = torch.cat([ctx[alive, 1:], ix[:, None]], 1)
                alive = alive[ix != 0]
        for row in ids[ids[:, 8] == 0].tolist():  # the others are longer than 8: rejected
            w = vocab.decode(row[:row.index(0)])
            if meets(w, "", c):
                reference.append(w)
    reference = reference[:6000]
    for what, f in (("lengths", len), ("first characters", lambda w: w[0]), ("last characters", lambda w: w[-1])):
        keys = sorted({f(w) for w in ours + reference})
        a = [sum(f(w) == k for w in ours) for k in keys]
        b = [sum(f(w) == k for w in reference) for k in keys]
        stat, df = two_sample_chi_square(a, b)
        assert df >= 3, what
        assert stat < chi_square_critical(df), f"{what}: chi-square {stat:.1f} on {df} degrees of freedom"


def test_the_same_seed_and_conditions_give_the_same_samples(ending):
    vocab, model = ending
    predictor = mm.model_predictor(model)
    c = conditions.Constraints(min_len=4, max_len=9, contains="e")
    a = mm.sample(predictor, vocab, 300, seed=3, constraints=c)
    assert a == mm.sample(predictor, vocab, 300, seed=3, constraints=c)
    assert a != mm.sample(predictor, vocab, 300, seed=4, constraints=c)
    assert all(4 <= len(w) <= 9 and "e" in w for w in a)


def test_tags_under_conditions(ending):
    vocab, model = ending
    predictor = mm.model_predictor(model)
    words = mm.sample(predictor, vocab, 3000, seed=1)
    splits = {"train": words[:1000], "dev": words[1000:1100], "test": words[1100:1200]}
    c = conditions.Constraints(min_len=3, exclude=words[:500])
    tagged = mm.sample_tagged(predictor, vocab, splits, 300, seed=2, constraints=c)
    assert [t["tag"] for t in tagged] == mm.tag_words([t["text"] for t in tagged], splits)
    assert {t["tag"] for t in tagged} >= {"train", "new"} and not any(t["text"] in words[:500] for t in tagged)
    new = mm.sample_tagged(predictor, vocab, splits, 100, seed=2, new_only=True, constraints=c)
    assert all(t["tag"] == "new" and len(t["text"]) >= 3 for t in new)


def test_hopeless_conditions_are_one_user_error_with_the_share(chain):
    """Words of 40 characters from a chain that ends most words within a few: given up after
    HOPELESS_DRAWS draws, with one line stating how many met the conditions."""
    vocab, predictor, _ = chain
    with pytest.raises(mm.UserError) as e:
        mm.sample(predictor, vocab, 5, seed=1, constraints=conditions.Constraints(min_len=40))
    message = str(e.value)
    assert "\n" not in message and "met the conditions (at least 40 characters long)" in message
    met, drawn = re.match(r"only (\d+) of ([\d,]+) samples \([\d.e+-]+%\)", message).groups()
    assert int(drawn.replace(",", "")) >= conditions.HOPELESS_DRAWS and int(met) < 30


@pytest.mark.parametrize("chunk", [None, 37])
def test_sample_streams_give_each_request_its_seeds_samples(ending, chunk, monkeypatch):
    """Requests drawn together, each from its seed's stream: each gets what sample_tagged gives
    it alone, with and without conditions, with the shared complete table or without one, and
    with chunks so small that one request's draws are split between two."""
    vocab, model = ending
    predictor = mm.model_predictor(model.double())
    try:
        words = mm.sample(predictor, vocab, 2000, seed=0)
        splits = {"train": words[:500], "dev": [], "test": []}
        requests = [(20, 1), (3, 2), (50, 3), (1, 2**62 + 5), (20, 1)]
        table = sampling.context_table(predictor, vocab)
        assert table is not None and np.allclose(table[:, -1], 1, atol=1e-5)
        cond = conditions.Constraints(min_len=4, max_len=10, suffix="u")
        cases = [(c, new_only, shared) for c in (None, cond) for new_only in (False, True)
                 for shared in (table, None)]
        if chunk is not None:
            monkeypatch.setattr(sampling, "MAX_CHUNK", chunk)
            cases = [(None, False, table), (cond, True, table)]
        for c, new_only, shared in cases:
            alone = [mm.sample_tagged(predictor, vocab, splits, n, seed=s, new_only=new_only, constraints=c)
                     for n, s in requests]
            together = sampling.sample_streams(predictor, vocab, splits, requests, new_only=new_only,
                                               constraints=c, table=shared)
            assert together == alone, (c, new_only, shared is None)
    finally:
        model.float()


def test_sample_streams_end_a_hopeless_request_alone(chain):
    vocab, predictor, _ = chain
    c = conditions.Constraints(min_len=40)
    [a, b] = sampling.sample_streams(predictor, vocab, {"train": [], "dev": [], "test": []}, [(3, 1), (3, 2)],
                                     constraints=c)
    assert isinstance(a, mm.UserError) and isinstance(b, mm.UserError)
    ok = sampling.sample_streams(predictor, vocab, {"train": [], "dev": [], "test": []}, [(3, 1)],
                                 constraints=conditions.Constraints(min_len=2))
    assert len(ok[0]) == 3


@pytest.mark.parametrize("kwargs", [
    dict(min_len=-1), dict(max_len=-1), dict(min_len=True), dict(min_len=2.5), dict(min_len=5, max_len=4),
    dict(suffix="A"), dict(suffix="a."), dict(contains="é"), dict(contains=3), dict(suffix="abcdef", max_len=5),
    dict(min_len=2 + 64 + 1, prefix="ab"), dict(max_len=1, prefix="ab"), dict(exclude=[3]),
])
def test_bad_conditions_are_user_errors(setup, kwargs):
    vocab, predictor = setup
    prefix = kwargs.pop("prefix", "")
    with pytest.raises(mm.UserError) as e:
        mm.sample(predictor, vocab, 5, prefix=prefix, constraints=conditions.Constraints(**kwargs))
    assert "\n" not in str(e.value)


def test_a_suffix_the_model_never_writes_is_a_user_error():
    """With --min-char-count, a rare character is read as the unknown token, never drawn."""
    words = ["ab", "ba", "aab"] * 20 + ["q"]
    vocab = mm.Vocab.from_words(words, min_count=2, count_in=words)
    model_cfg, _ = mm.make_configs("tiny2d", vocab_size=vocab.size)
    predictor = mm.model_predictor(mm.MLP(model_cfg, seed=0))
    with pytest.raises(mm.UserError, match="never writes"):
        mm.sample(predictor, vocab, 5, constraints=conditions.Constraints(suffix="aq"))


# ----------------------------------------------------------------------------------------
# The `sample` command


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from conftest import make_words

    tmp = tmp_path_factory.mktemp("sample")
    data = tmp / "words.txt"
    data.write_text("\n".join(make_words()))
    run = tmp / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--preset", "lecture", "--hidden", "32",
                 "--steps", "100", "--quiet"]) == 0
    return run


def makemore_process(*args, **env):
    """`python -m makemore ARGS` running this tree's package."""
    src = str(Path(sampling.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.Popen([sys.executable, "-m", "makemore", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_cli_json_and_jsonl(run_dir, capsys):
    assert main(["sample", str(run_dir), "-n", "30", "--seed", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert main(["sample", str(run_dir), "-n", "30", "--seed", "4", "--json"]) == 0
    array = json.loads(capsys.readouterr().out)
    assert main(["sample", str(run_dir), "-n", "30", "--seed", "4", "--jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in array] == [r["text"] for r in records] == lines
    assert all(r["tag"] in ("train", "dev", "test", "new") for r in records)


@pytest.mark.parametrize("flags", [["-n", "0"], ["-n", "x"], ["--temperature", "0"], ["--temperature", "nan"],
                                   ["--top-k", "0"], ["--json", "--jsonl"], ["--min-len", "-1"], ["--max-len", "x"],
                                   ["--max-len", "2.5"]])
def test_cli_bad_flags_are_one_line(run_dir, capsys, flags):
    with pytest.raises(SystemExit) as e:
        main(["sample", str(run_dir), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_conditions_keep_the_plain_samples_that_meet_them(run_dir, capsys, tmp_path):
    """--suffix, --contains, --min-len, --max-len, --exclude: with a seed, the samples are those
    of the same seed without them that meet them all, in order; tagged as ever."""
    assert main(["sample", str(run_dir), "-n", "3000", "--seed", "4"]) == 0
    plain = capsys.readouterr().out.splitlines()
    taken = list(dict.fromkeys(w for w in plain if w.endswith("a")))[:10]
    exclude = tmp_path / "taken.txt"
    exclude.write_text("\r\n".join(taken) + "\r\n\r\n")  # read as any list of words: CRLF, blank lines
    flags = ["--suffix", "a", "--contains", "n", "--min-len", "4", "--max-len", "8", "--exclude", str(exclude)]
    assert main(["sample", str(run_dir), "-n", "30", "--seed", "4", *flags, "--jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = [w for w in plain if w.endswith("a") and "n" in w and 4 <= len(w) <= 8 and w not in taken][:30]
    assert len(expected) == 30 and [r["text"] for r in records] == expected
    splits = json.loads((run_dir / "words.json").read_text())
    for r in records:
        assert r["tag"] == next((k for k in ("train", "dev", "test") if r["text"] in splits[k]), "new")
    assert main(["sample", str(run_dir), "-n", "30", "--seed", "4", *flags]) == 0
    assert capsys.readouterr().out.splitlines() == expected  # the same seed, the same samples


@pytest.mark.parametrize("flags, message", [
    (["--min-len", "9", "--max-len", "3"], "the minimum length 9 is above the maximum length 3"),
    (["--suffix", "A"], "not in the model's vocabulary"),
    (["--contains", "."], "boundary token"),
    (["--prefix", "mana", "--max-len", "3"], "more than the maximum length 3"),
    (["--exclude", "/nonexistent/taken.txt"], "cannot read /nonexistent/taken.txt"),
    (["--suffix", "jjjjjjj", "--json"], "met the conditions (ending in 'jjjjjjj')"),
])
def test_cli_bad_or_hopeless_conditions_are_one_line(run_dir, capsys, flags, message):
    assert main(["sample", str(run_dir), "-n", "5", "--seed", "1", *flags]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("makemore: error: ") and message in lines[0], lines
    if "--json" in flags and captured.out:  # what was written before giving up stays valid JSON
        assert all(r["text"].endswith("jjjjjjj") for r in json.loads(captured.out))


def test_cli_max_len_above_the_cap_and_the_note_on_cut_samples(run_dir, capsys):
    """--max-len 100 gives samples longer than the cap of 64 (it was cut at 64 before); without
    --max-len, samples cut at the cap are counted in a note on stderr, not passed off as words."""
    flags = ["-n", "5000", "--seed", "1", "--temperature", "100"]  # near uniform: ~0.5% run past 64 characters
    assert main(["sample", str(run_dir), *flags, "--max-len", "100"]) == 0
    captured = capsys.readouterr()
    lengths = [len(w) for w in captured.out.splitlines()]
    assert len(lengths) == 5000 and 64 < max(lengths) <= 100 and captured.err == ""
    assert main(["sample", str(run_dir), *flags]) == 0
    captured = capsys.readouterr()
    cut = sum(len(w) == 64 for w in captured.out.splitlines())
    assert cut > 0 and max(len(w) for w in captured.out.splitlines()) == 64
    assert captured.err.startswith(f"note: {cut:,} samples reached the cap of 64 characters past the prefix")


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_cli_streams_and_leaves_quietly_when_the_reader_stops(run_dir, unbuffered):
    """-n 10^8 through a pipe: the first lines come without waiting for the rest, and closing
    the pipe (as `| head` does) ends the process quietly with status 0."""
    proc = makemore_process("sample", str(run_dir), "-n", "100000000", "--seed", "1", PYTHONUNBUFFERED=unbuffered)
    first = [proc.stdout.readline() for _ in range(1000)]
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""
    assert all(line.endswith(b"\n") for line in first)


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_cli_ctrl_c_stops_at_a_chunk_boundary(run_dir, unbuffered):
    """SIGINT while sampling 10^8: exit 130, one line on stderr, and the output is whole: the
    JSON array written so far is closed and parses. With PYTHONUNBUFFERED the signal usually
    lands in a write blocked on the full pipe, which then writes only part of its bytes."""
    proc = makemore_process("sample", str(run_dir), "-n", "100000000", "--seed", "1", "--json",
                            PYTHONUNBUFFERED=unbuffered)
    head = proc.stdout.readline() + proc.stdout.readline()
    assert head.startswith(b'[\n{"text": ')  # it is inside the sampling loop
    time.sleep(0.5)  # let it fill the pipe and block (the test passes either way)
    proc.send_signal(signal.SIGINT)
    out, err = head + proc.stdout.read(), proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("makemore: interrupted after "), err
    records = json.loads(out)
    assert len(records) > 0 and all(set(r) == {"text", "tag"} for r in records)


def test_the_unknown_character_token_is_never_drawn():
    """With --min-char-count, rare characters share one token; a sample never contains it, even
    when the model gives it most of the probability."""
    words = ["ab", "ba", "aab"] * 20 + ["q"]
    vocab = mm.Vocab.from_words(words, min_count=2, count_in=words)
    assert vocab.unk_id == 1
    model_cfg, _ = mm.make_configs("tiny2d", vocab_size=vocab.size)
    model = mm.MLP(model_cfg, seed=0).eval()
    with torch.no_grad():
        model.b_out.zero_()
        model.b_out[vocab.unk_id] = 5.0  # the unknown token would be drawn ~90% of the time
    for seed in (0, 1):
        drawn = mm.sample(mm.model_predictor(model), vocab, 300, seed=seed)
        assert all(vocab.unk not in w for w in drawn) and any(drawn)


def test_no_empty_words_unless_asked(chain):
    """The chain ends at once a fifth of the time: an empty word, which no list holds. By default
    (Constraints.min_len 1, `--min-len 1`) they are left out, the others drawn in proportion;
    min_len 0 keeps the model's own distribution, empty words and all."""
    vocab, predictor, probs = chain
    words = mm.sample(predictor, vocab, 20_000, seed=5, max_len=CHAIN_CAP)
    assert len(words) == 20_000 and "" not in words
    stat, df = chi_square_against(words, conditioned(chain_words(probs), lambda w: w != ""))
    assert stat < chi_square_critical(df), f"chi-square {stat:.1f} on {df} degrees of freedom"
    raw = mm.sample(predictor, vocab, 20_000, seed=5, max_len=CHAIN_CAP, constraints=RAW)
    assert 0.18 < raw.count("") / len(raw) < 0.22  # P(end first) = 0.2
