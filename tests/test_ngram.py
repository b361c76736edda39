import math

import numpy as np
import pytest
import torch

from conftest import make_words
from makemore.data import Vocab, build_examples, load_corpus
from makemore.ngram import NGramModel, add_one_bigram_nll, fit_on_dev, ngram_table

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
                              ("kneser_ney", 0.9)):
        model = NGramModel(X, Y, vocab.size, method, smoothing)
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


def decode_key(key: int, length: int, vocab: Vocab) -> str:
    """The characters of a base-V n-gram key, first character most significant."""
    digits = []
    for _ in range(length):
        key, digit = divmod(key, vocab.size)
        digits.append(digit)
    return vocab.decode(digits[::-1])


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
        found = {decode_key(int(key), order + 1, vocab): int(count)
                 for key, count in zip(table.pair_keys, table.pair_counts)}
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
            other = NGramModel.from_words(train, vocab, 3, method, best * factor)
            if method == "kneser_ney" and best * factor > 1:
                continue
            assert other.nll(X_dev, Y_dev) > best_loss, method


def test_add_one_bigram_over_all_names_matches_part_1(names_corpus):
    assert add_one_bigram_nll(names_corpus.words) == pytest.approx(2.454, abs=1e-3)


def test_kneser_ney_beats_add_alpha_at_context_5(names_table):
    row = names_table[4]
    assert row["context"] == 5
    assert row["kneser_ney"]["dev_loss"] < row["add_alpha"]["dev_loss"]
    assert row["kneser_ney"]["dev_loss"] < 2.05


def test_ngram_table_rows(names_table, names_corpus):
    assert [row["context"] for row in names_table] == [1, 2, 3, 4, 5, 6]
    for row in names_table:
        assert set(row) == {"context", "table_entries", "unseen_dev_contexts", "add_alpha", "kneser_ney"}
        assert row["table_entries"] == 27 ** (row["context"] + 1)
        assert set(row["add_alpha"]) == {"alpha", "dev_loss"}
        assert set(row["kneser_ney"]) == {"discount", "dev_loss"}
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
