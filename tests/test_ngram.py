import math
import random
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import make_words
import makemore.counts as sparse_counts
from makemore.data import Examples, Vocab, build_examples, load_corpus
from makemore.errors import UserError
from makemore.baselines import add_one_bigram_nll, fit_on_dev, ngram_table
from makemore.ngram import NGramModel, example_columns

METHODS = ("add_alpha", "kneser_ney")


@pytest.fixture(scope="module")
def names_corpus(names_path):
    return load_corpus(names_path, seed=42)


@pytest.fixture(scope="module")
def names_table(names_corpus):
    return ngram_table(names_corpus, max_context=6)


def random_contexts(rng: torch.Generator, n: int, context: int, vocab_size: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (n, context), generator=rng)


def check_distributions(words: list[str], vocab: Vocab, context: int) -> None:
    X, Y = build_examples(words, vocab, context)
    rng = torch.Generator().manual_seed(context)
    # Seen training contexts and random ones, most of which training never saw.
    contexts = torch.cat([X[:200], random_contexts(rng, 300, context, vocab.size)])
    for method, smoothing in (("add_alpha", 0.05), ("add_alpha", 2.0), ("kneser_ney", 0.3),
                              ("kneser_ney", 0.9), ("modified_kneser_ney", (0.5, 1.2, 1.9))):
        model = NGramModel.from_arrays(X, Y, vocab.size, method, smoothing)
        probs = model.probs(contexts)
        assert probs.shape == (len(contexts), vocab.size)
        assert (probs > 0).all(), (method, context)
        torch.testing.assert_close(probs.sum(1), torch.ones(len(contexts)), atol=1e-5, rtol=0)
        # The nll path looks up only the target column; it must agree with the full rows.
        targets = torch.randint(0, vocab.size, (len(contexts),), generator=rng)
        expected = -probs.double()[torch.arange(len(contexts)), targets].log().mean().item()
        assert model.nll(contexts, targets) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("context", range(1, 6))
def test_distributions_sum_to_one_on_generated_words(context):
    words = make_words(300, seed=1)
    check_distributions(words, Vocab.from_words(words), context)


@pytest.mark.parametrize("context", range(1, 6))
def test_distributions_sum_to_one_on_names(names_corpus, context):
    check_distributions(names_corpus.splits["train"], names_corpus.vocab, context)


def test_add_alpha_by_hand():
    # Vocab ".ab". Bigram examples of "aab" and "b": .a aa ab b. | .b b.
    # Counts after '.': a 1, b 1; after 'a': a 1, b 1; after 'b': '.' 2.
    vocab = Vocab.from_words(["aab", "b"])
    assert vocab.chars == ".ab"
    model = NGramModel.from_words(["aab", "b"], vocab, context=1, method="add_alpha", smoothing=0.5)
    probs = model.probs(torch.tensor([[0], [1], [2]]))
    expected = torch.tensor([[0.5 / 3.5, 1.5 / 3.5, 1.5 / 3.5],   # after '.': (0+.5, 1+.5, 1+.5) / (2 + 3*.5)
                             [0.5 / 3.5, 1.5 / 3.5, 1.5 / 3.5],
                             [2.5 / 3.5, 0.5 / 3.5, 0.5 / 3.5]])  # after 'b': (2+.5, .5, .5) / 3.5
    torch.testing.assert_close(probs, expected)
    assert model.nll(torch.tensor([[2]]), torch.tensor([0])) == pytest.approx(-math.log(2.5 / 3.5))
    # A context never seen in training gets the uniform distribution.
    trigram = NGramModel.from_words(["aab", "b"], vocab, context=2, method="add_alpha", smoothing=0.5)
    torch.testing.assert_close(trigram.probs(torch.tensor([[2, 2]])), torch.full((1, 3), 1 / 3))


def test_kneser_ney_by_hand():
    # Bigram types of "aab" and "b": .a aa ab b. .b. Continuation counts: a is preceded by
    # {., a}: 2; b by {a, .}: 2; '.' by {b}: 1; 5 types, 3 distinct chars. With D = 0.5:
    #   P0(a) = (2 - .5 + .5 * 3 * 1/3) / 5 = 0.4, P0(b) = 0.4, P0(.) = (1 - .5 + .5) / 5 = 0.2
    #   P(. | b) = (2 - .5 + .5 * 1 * 0.2) / 2 = 0.8, P(a | b) = P(b | b) = .5 * 0.4 / 2 = 0.1
    vocab = Vocab.from_words(["aab", "b"])
    model = NGramModel.from_words(["aab", "b"], vocab, context=1, method="kneser_ney", smoothing=0.5)
    torch.testing.assert_close(model.probs(torch.tensor([[2]])), torch.tensor([[0.8, 0.1, 0.1]]))


def spell(counts, length: int, context_id: int) -> list[int]:
    """The characters of a context from its dense id: each key holds (id of the context without
    its first character) * V + its first character."""
    chars = []
    for j in range(length, 0, -1):
        context_id, first = divmod(int(counts.context_keys[j][context_id]), counts.vocab_size)
        chars.append(first)
    return chars


def test_kneser_ney_lower_orders_hold_continuation_counts():
    words = make_words(200, seed=3)
    vocab = Vocab.from_words(words)
    k = 3
    model = NGramModel.from_words(words, vocab, k, "kneser_ney")
    padded = [vocab.boundary * k + w + vocab.boundary for w in words]
    for order in range(k):  # order n: an n-char context and its next char
        left_neighbours: dict[str, set[str]] = {}
        for text in padded:
            for end in range(k + 1, len(text) + 1):
                gram = text[end - order - 1:end]
                left_neighbours.setdefault(gram, set()).add(text[end - order - 2])
        table = model.tables[order]
        found = {}
        for key, count in zip(table.pair_keys, table.pair_counts):
            context_id, next_char = divmod(int(key), vocab.size)
            found[vocab.decode(spell(model.counts, order, context_id) + [next_char])] = int(count)
        assert found == {gram: len(left) for gram, left in left_neighbours.items()}, order


def test_tuning_finds_the_minimum_of_the_dev_loss():
    words = make_words(600, seed=2)
    vocab = Vocab.from_words(words)
    train, dev = words[:500], words[500:]
    X_dev, Y_dev = build_examples(dev, vocab, 3)
    for method in METHODS:
        model = NGramModel.from_words(train, vocab, 3, method)
        best = model.tune(X_dev, Y_dev)
        best_loss = model.nll(X_dev, Y_dev)
        for factor in (0.7, 1.4):
            if method == "modified_kneser_ney":  # each of the three discounts moved alone
                others = [tuple(d * factor if i == r else d for i, d in enumerate(best)) for r in range(3)]
                others = [o for o in others if all(d <= r + 1 for r, d in enumerate(o))]
            else:
                others = [] if method == "kneser_ney" and best * factor > 1 else [best * factor]
            for other in others:
                assert NGramModel.from_words(train, vocab, 3, method, other).nll(X_dev, Y_dev) > best_loss, method


def test_add_one_bigram_over_all_names_matches_part_1(names_corpus):
    assert add_one_bigram_nll(names_corpus.words) == pytest.approx(2.454, abs=1e-3)


def test_kneser_ney_beats_add_alpha_at_context_5(names_table):
    row = names_table[4]
    assert row["context"] == 5
    assert row["kneser_ney"]["dev_loss"] < row["add_alpha"]["dev_loss"]
    assert row["kneser_ney"]["dev_loss"] < 2.05


def test_modified_kneser_ney_beats_one_discount_on_names(names_table):
    # Chen & Goodman (1998): three discounts by count are better than one; never worse on dev
    # here by construction (tuned from the one discount's optimum), and 0.012 better at 5
    for row in names_table:
        assert row["modified_kneser_ney"]["dev_loss"] <= row["kneser_ney"]["dev_loss"] + 1e-12
        d1, d2, d3 = row["modified_kneser_ney"]["discounts"]
        assert 0 < d1 <= 1 and 0 < d2 <= 2 and 0 < d3 <= 3
    assert names_table[4]["modified_kneser_ney"]["dev_loss"] < names_table[4]["kneser_ney"]["dev_loss"] - 0.008


def test_modified_kneser_ney_with_equal_discounts_is_kneser_ney():
    words = make_words(400, seed=3)
    vocab = Vocab.from_words(words)
    X, Y = build_examples(words, vocab, 4)
    contexts = torch.cat([X[:100], random_contexts(torch.Generator().manual_seed(0), 100, 4, vocab.size)])
    for d in (0.2, 0.75, 1.0):
        one = NGramModel.from_arrays(X, Y, vocab.size, "kneser_ney", d)
        three = NGramModel.from_arrays(X, Y, vocab.size, "modified_kneser_ney", (d, d, d))
        torch.testing.assert_close(three.probs(contexts), one.probs(contexts), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="three discounts"):
        NGramModel.from_arrays(X, Y, vocab.size, "modified_kneser_ney", 0.5)


def test_ngram_table_rows(names_table, names_corpus):
    assert [row["context"] for row in names_table] == [1, 2, 3, 4, 5, 6]
    for row in names_table:
        assert set(row) == {"context", "table_entries", "unseen_dev_contexts", "add_alpha", "kneser_ney",
                            "modified_kneser_ney"}
        assert row["table_entries"] == 27 ** (row["context"] + 1)
        assert set(row["add_alpha"]) == {"alpha", "dev_loss"}
        assert set(row["kneser_ney"]) == {"discount", "dev_loss"}
        assert set(row["modified_kneser_ney"]) == {"discounts", "dev_loss"}
    unseen = [row["unseen_dev_contexts"] for row in names_table]
    assert unseen[0] == 0.0  # every single character occurs in training
    assert all(a < b for a, b in zip(unseen, unseen[1:])), unseen
    # The table's figure is the loss of a model fitted the ordinary way on the same split.
    model = fit_on_dev(names_corpus, 3, "add_alpha")
    dev_loss = model.nll(*names_corpus.examples("dev", 3))
    assert dev_loss == pytest.approx(names_table[2]["add_alpha"]["dev_loss"])


def test_rejects_contexts_of_the_wrong_shape_or_range():
    words = make_words(50)
    vocab = Vocab.from_words(words)
    model = NGramModel.from_words(words, vocab, 2, "kneser_ney")
    with pytest.raises(ValueError):
        model.probs(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        model.probs(torch.full((3, 2), vocab.size))
    assert np.isfinite(model.nll(*build_examples(words, vocab, 2)))


# ----------------------------------------------------------------------------------------
# Against a plain reference: the formulas of the module docstring over dicts of counts,
# with the n-grams spelled out as tuples (no keys, no ids), for any vocabulary size.


class ReferenceNGram:
    def __init__(self, words: list[str], vocab: Vocab, k: int):
        self.V, self.k = vocab.size, k
        windows = []  # (context tuple of k ids, next id) of every example
        for w in words:
            ids = [0] * k + vocab.encode(w) + [0]
            windows += [(tuple(ids[p - k:p]), ids[p]) for p in range(k, len(ids))]
        raw = Counter(windows)
        # order n's counts: raw at the top, continuation counts (distinct left neighbours) below
        self.counts = {k: raw}
        for n in range(k):
            longer = {(ctx[len(ctx) - n - 1:], c) for ctx, c in raw}
            self.counts[n] = Counter((ctx[1:], c) for ctx, c in longer)
        self.totals, self.followers = {}, {}
        for n, counts in self.counts.items():
            self.totals[n], self.followers[n] = Counter(), Counter()
            for (h, _), count in counts.items():
                self.totals[n][h] += count
                self.followers[n][h] += 1

    def prob(self, context: tuple, c: int, method: str, smoothing) -> float:
        k, V = self.k, self.V
        if method == "add_alpha":
            return (self.counts[k][(context, c)] + smoothing) / (self.totals[k][context] + smoothing * V)
        if method == "modified_kneser_ney":
            return self.modified_prob(context, c, smoothing)
        discounts = [smoothing] * (k + 1) if np.ndim(smoothing) == 0 else smoothing
        p = 1.0 / V
        for n in range(k + 1):
            h = context[len(context) - n:] if n else ()
            total = self.totals[n][h]
            if total:  # an unseen context defers to the lower order
                D = discounts[n]
                p = (max(self.counts[n][(h, c)] - D, 0) + D * self.followers[n][h] * p) / total
        return p

    def modified_prob(self, context: tuple, c: int, discounts) -> float:
        """Chen & Goodman's modified Kneser-Ney: D1, D2, D3 for counts of 1, 2, 3 or more."""
        def discount(count: int) -> float:
            return 0.0 if count == 0 else discounts[min(count, 3) - 1]

        p = 1.0 / self.V
        for n in range(self.k + 1):
            h = context[len(context) - n:] if n else ()
            total = self.totals[n][h]
            if total:
                freed = sum(discount(count) for (g, _), count in self.counts[n].items() if g == h)
                count = self.counts[n][(h, c)]
                p = (count - discount(count) + freed * p) / total
        return p


def query_contexts(X: torch.Tensor, vocab_size: int, n: int, seed: int) -> torch.Tensor:
    """Training contexts, random ones, and training contexts with a random first character
    (their shorter suffixes seen, the whole often not)."""
    rng = torch.Generator().manual_seed(seed)
    seen = X[torch.randperm(len(X), generator=rng)[:n]]
    mixed = seen.clone()
    if mixed.shape[1]:
        mixed[:, 0] = torch.randint(0, vocab_size, (len(mixed),), generator=rng)
    return torch.cat([seen, mixed, torch.randint(0, vocab_size, (n, X.shape[1]), generator=rng)])


def random_words(n: int, alphabet: str, seed: int, max_length: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(alphabet, k=rng.randint(1, max_length))) for _ in range(n)]


@pytest.mark.parametrize("context", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("alphabet", ["ab", "abcdefg"])
def test_probabilities_match_a_plain_reference(context, alphabet):
    words = random_words(150, alphabet, seed=context)
    vocab = Vocab.from_words(words)
    reference = ReferenceNGram(words, vocab, context)
    X, Y = build_examples(words, vocab, max(context, 1))
    X = X[:, X.shape[1] - context:]
    contexts = query_contexts(X, vocab.size, 40, seed=context)
    targets = torch.randint(0, vocab.size, (len(contexts),), generator=torch.Generator().manual_seed(1))
    # repeated examples: nll scores each distinct one once, weighted by its number
    repeats = torch.cat([torch.arange(len(contexts)), torch.arange(50), torch.arange(5)])
    contexts, targets = contexts[repeats], targets[repeats]
    for method, smoothing in (("add_alpha", 0.3), ("kneser_ney", 0.7),
                              ("kneser_ney", [0.2 + 0.15 * n for n in range(context + 1)]),
                              ("modified_kneser_ney", (0.3, 0.9, 1.6))):
        # counted from the compact examples and from the lecture's arrays: the same model
        for model in (NGramModel.from_words(words, vocab, context, method, smoothing),
                      NGramModel.from_arrays(X, Y, vocab.size, method, smoothing)):
            expected = np.array([[reference.prob(tuple(h.tolist()), c, method, smoothing) for c in range(vocab.size)]
                                 for h in contexts])
            np.testing.assert_allclose(model.probs(contexts).numpy(), expected, rtol=1e-6, atol=0)
            target_nll = -np.log(expected[np.arange(len(contexts)), targets.numpy()]).mean()
            assert model.nll(contexts, targets) == pytest.approx(target_nll, rel=1e-12)


def test_a_vocabulary_of_thousands_with_six_characters_of_context():
    # ~4,000 characters: base-V keys of 7-grams would need V^7 ~ 1e25 > 2^63.
    alphabet = "".join(chr(0x4E00 + i) for i in range(5000))
    words = random_words(2000, alphabet, seed=0, max_length=8)
    vocab = Vocab.from_words(words)
    k = 6
    assert vocab.size > 3000 and vocab.size ** (k + 1) > np.iinfo(np.int64).max
    reference = ReferenceNGram(words, vocab, k)
    X, _ = build_examples(words, vocab, k)
    contexts = query_contexts(X, vocab.size, 20, seed=0)
    rng = np.random.default_rng(0)
    for method, smoothing in (("add_alpha", 0.01), ("kneser_ney", 0.8)):
        model = NGramModel.from_words(words, vocab, k, method, smoothing)
        probs = model.probs(contexts)
        assert probs.shape == (len(contexts), vocab.size) and (probs > 0).all()
        torch.testing.assert_close(probs.double().sum(1), torch.ones(len(contexts), dtype=torch.float64),
                                   atol=1e-5, rtol=0)
        for i, h in enumerate(contexts):  # a sample of next chars per context, beside the ones seen
            chars = np.union1d(rng.choice(vocab.size, 30, replace=False), X[:5, -1].numpy())
            expected = [reference.prob(tuple(h.tolist()), int(c), method, smoothing) for c in chars]
            np.testing.assert_allclose(probs[i, chars].numpy(), expected, rtol=1e-6, atol=0)


def test_example_columns_are_the_columns_of_the_contexts():
    words = make_words(40, seed=5) + ["x"]
    vocab = Vocab.from_words(words)
    examples = Examples.from_words(words, vocab)
    X = examples.contexts(np.arange(len(examples)), 9)
    column = example_columns(examples)
    for j in range(1, 10):
        np.testing.assert_array_equal(column(j), X[:, 9 - j])


def test_counting_refuses_what_would_not_fit_in_memory(monkeypatch):
    words = make_words(50)
    vocab = Vocab.from_words(words)
    monkeypatch.setattr(sparse_counts, "available_memory", lambda: 1000)
    with pytest.raises(UserError, match="GiB"):
        NGramModel.from_words(words, vocab, 3)


def test_unique_ranks_with_keys_too_wide_to_pack():
    # Keys near 2^62 leave no bits for the index: the argsort path must give the same answer.
    rng = np.random.default_rng(0)
    for low in (0, 2**62):
        keys = low + rng.integers(0, 50, 1000)
        distinct, ranks = sparse_counts._unique_ranks(keys)
        expected_distinct, expected_ranks = np.unique(keys, return_inverse=True)
        np.testing.assert_array_equal(distinct, expected_distinct)
        np.testing.assert_array_equal(ranks, expected_ranks)


def test_fit_best_order_keeps_the_order_that_scores_best_on_dev(tmp_path):
    from makemore.baselines import fit_best_order, fit_on_dev

    # words that repeat long patterns: more context keeps helping
    rng = random.Random(0)
    stems = ["".join(rng.choice("abcdefgh") for _ in range(9)) for _ in range(40)]
    path = tmp_path / "long.txt"
    path.write_text("\n".join(rng.choice(stems) + rng.choice("xyz") for _ in range(3000)) + "\n")
    corpus = load_corpus(str(path))
    losses = {k: fit_on_dev(corpus, k).nll(corpus.encoded("dev")) for k in (2, 3, 4, 5)}
    best = fit_best_order(corpus, [2, 3, 4, 5])
    assert best.context == min(losses, key=losses.get)
    assert best.nll(corpus.encoded("dev")) == pytest.approx(min(losses.values()), abs=1e-9)
    assert best.context > 2
    # one order: that order
    assert fit_best_order(corpus, [3]).context == 3


def test_a_certain_target_scores_zero_not_minus_zero():
    # Every word "a": with a long context each target is certain, log 1 = 0, and the mean of
    # -0.0 printed as "-0.0000" in `ngram` and `mix`.
    vocab = Vocab.from_words(["a"])
    X, Y = build_examples(["a"] * 20, vocab, 6)
    model = NGramModel.from_arrays(X, Y, vocab.size, "kneser_ney", 0.001)
    assert f"{model.nll(X, Y):.4f}" == "0.0000"
