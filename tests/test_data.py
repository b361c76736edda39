import hashlib
import http.server
import threading

import numpy as np
import pytest

from makemore.data import (NAMES_SHA256, Examples, Vocab, build_examples, load_corpus, read_words, resolve_data,
                           split_words)
from makemore.errors import UserError


def test_lecture_split_sizes(names_path):
    corpus = load_corpus(names_path, seed=42)
    assert len(corpus.words) == 32033
    sizes = {s: corpus.examples(s, 3)[0].shape[0] for s in ("train", "dev", "test")}
    assert sizes == {"train": 182441, "dev": 22902, "test": 22803}
    assert corpus.stats(3)["examples"] == sizes
    assert corpus.vocab.chars == ".abcdefghijklmnopqrstuvwxyz"


def test_examples_of_emma_match_the_lecture():
    vocab = Vocab.from_words(["emma"])
    X, Y = build_examples(["emma"], vocab, 3)
    contexts = ["".join(vocab.chars[i] for i in row) for row in X.tolist()]
    assert contexts == ["...", "..e", ".em", "emm", "mma"]
    assert vocab.decode(Y.tolist()) == "emma."


def test_read_words_strips_bom_cr_and_blank_lines(tmp_path):
    path = tmp_path / "w.txt"
    path.write_bytes("\ufeffanna\r\n\r\n  bob \r\n\n\ncarl".encode("utf-8"))
    assert read_words(path) == ["anna", "bob", "carl"]


def test_boundary_token_avoids_characters_in_the_data():
    vocab = Vocab.from_words(["a.b", "c#d"])
    assert vocab.boundary not in "a.bc#d"
    assert vocab.chars[0] == vocab.boundary and vocab.chars[1:] == "#.abcd"


def test_split_is_deterministic_and_disjoint():
    words = [f"w{i}" for i in range(100)]
    a, b = split_words(words, 7), split_words(words, 7)
    assert a == b and split_words(words, 8) != a
    assert sorted(a["train"] + a["dev"] + a["test"]) == sorted(words)
    assert [len(a[s]) for s in ("train", "dev", "test")] == [80, 10, 10]


@pytest.mark.parametrize("content, message", [
    (b"", "no words"), (b"\n\n  \n", "no words"), (b"\xff\xfeabc\n", "not UTF-8"),
    (b"abc\x00\x01\x02", "binary"),
    ("emma\nava\n".encode("utf-16"), "UTF-16 text; makemore reads UTF-8: re-encode it"),
    ("emma\nava\n".encode("utf-16-le"), "UTF-16 text"), ("emma\nava\n".encode("utf-16-be"), "UTF-16 text"),
])
def test_bad_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_corpus(path)


def test_too_few_words(tmp_path):
    path = tmp_path / "few.txt"
    path.write_text("a\nb\nc\n")
    with pytest.raises(UserError, match="too few words"):
        load_corpus(path)


# --- the `names` download path, against a local HTTP server -------------------------------

@pytest.fixture
def http_server():
    body = {"data": b""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body["data"])))
            self.end_headers()
            self.wfile.write(body["data"])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield body, f"http://127.0.0.1:{server.server_address[1]}/names.txt"
    server.shutdown()


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("MAKEMORE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "makemore" / "names.txt"


def test_download_checks_sha256_and_caches(names_path, http_server, empty_cache, monkeypatch):
    body, url = http_server
    body["data"] = names_path.read_bytes()
    monkeypatch.setenv("MAKEMORE_NAMES_URL", url)
    assert resolve_data("names") == empty_cache
    assert hashlib.sha256(empty_cache.read_bytes()).hexdigest() == NAMES_SHA256
    body["data"] = b"changed"  # a second call must use the cache, not the network
    assert resolve_data("names") == empty_cache


def test_download_of_corrupted_body_is_rejected_and_not_kept(http_server, empty_cache, monkeypatch):
    body, url = http_server
    body["data"] = b"emma\nolivia\nava\n"
    monkeypatch.setenv("MAKEMORE_NAMES_URL", url)
    with pytest.raises(UserError, match="sha256"):
        resolve_data("names")
    assert not empty_cache.exists()
    assert not list(empty_cache.parent.glob("*"))  # no temp file left either


def test_offline_without_a_copy_says_how_to_pass_a_file(empty_cache, monkeypatch):
    monkeypatch.setenv("MAKEMORE_NAMES_URL", "http://127.0.0.1:9/names.txt")  # discard port: refused
    with pytest.raises(UserError, match="--data path/to/words.txt"):
        resolve_data("names")


def test_data_dir_is_used_first(names_path, monkeypatch, tmp_path):
    monkeypatch.setenv("MAKEMORE_DATA_DIR", str(names_path.parent))
    monkeypatch.setenv("MAKEMORE_NAMES_URL", "http://127.0.0.1:9/never")
    assert resolve_data("names") == names_path


# --- the compact data path -----------------------------------------------------------------

def lecture_build_dataset(words, stoi, block_size):
    """makemore part 2's build_dataset, literally (lists of ints, one context per example)."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return X, Y


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_compact_examples_are_the_lectures_examples(names_path, block_size):
    corpus = load_corpus(names_path)
    stoi = {c: i for i, c in enumerate(corpus.vocab.chars)}
    for split in ("train", "dev"):
        X, Y = lecture_build_dataset(corpus.splits[split], stoi, block_size)
        examples = corpus.encoded(split)
        assert len(examples) == len(Y) and examples.ids.dtype == np.uint16
        Xc, Yc = examples.tensors(block_size)
        assert Xc.tolist() == X and Yc.tolist() == Y
        # any subset of positions, in any order, gathers the same rows
        pos = np.random.default_rng(0).integers(0, len(Y), 500)
        Xp, Yp = examples.batch(pos, block_size)
        assert Xp.tolist() == [X[i] for i in pos] and Yp.tolist() == [Y[i] for i in pos]


def test_examples_of_words_longer_than_the_context_and_of_one_character():
    vocab = Vocab.from_words(["abcdefgh", "z"])
    X, Y = build_examples(["abcdefgh", "z"], vocab, 3)
    rows = ["".join(vocab.chars[i] for i in r) for r in X.tolist()]
    assert rows == ["...", "..a", ".ab", "abc", "bcd", "cde", "def", "efg", "fgh", "...", "..z"]
    assert vocab.decode(Y.tolist()) == "abcdefgh.z."


def test_the_dev_subset_is_fixed_and_covers_small_splits_whole():
    vocab = Vocab.from_words(["ab", "cd"])
    examples = Examples.from_words(["ab", "cd"] * 500, vocab)
    assert len(examples) == 3000
    a, b = examples.subset(100), examples.subset(100)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0)
    assert not np.array_equal(examples.subset(100, seed=1), a)
    assert np.array_equal(examples.subset(5000), np.arange(3000))


def test_rare_characters_fold_into_one_unknown_token(tmp_path):
    # 'x' appears 3 times in training words, 'q' once, 'ж' never in train (only in another split)
    words = ["ab", "ba", "aab"] * 40 + ["xab", "bxa", "abx", "qa"]
    vocab = Vocab.from_words(words + ["жa"], min_count=3, count_in=words)
    assert vocab.unk is not None and vocab.chars[1] == vocab.unk and vocab.unk_id == 1
    assert set(vocab.chars[2:]) == {"a", "b", "x"}
    assert vocab.encode("qжab") == [1, 1, vocab.stoi["a"], vocab.stoi["b"]]
    ids = vocab.encode_array("qжab" + vocab.boundary)
    assert ids.tolist() == [1, 1, vocab.stoi["a"], vocab.stoi["b"], 0]
    # without min_count every character keeps its own id, and an unseen one is an error
    plain = Vocab.from_words(words)
    assert plain.unk is None and "q" in plain.chars
    with pytest.raises(UserError, match="not in the model's vocabulary"):
        plain.encode_array("ж")


def test_min_char_count_reports_what_it_folds(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("\n".join(["anna", "bob", "carl", "dave"] * 30 + ["zoë", "ñu"]) + "\n", encoding="utf-8")
    corpus = load_corpus(path, min_char_count=2)
    stats = corpus.stats(3)
    folded = {c for c in "zoëñu" if c not in corpus.vocab.chars}
    assert "ë" in folded and "ñ" in folded and "a" in corpus.vocab.chars
    assert stats["folded_chars"] == len(folded)
    total = sum(len(w) for w in corpus.words)
    expected = sum(1 for w in corpus.words for c in w if c in folded) / total
    assert stats["folded_share"] == pytest.approx(expected)
    with pytest.raises(UserError, match="min-char-count"):
        load_corpus(path, min_char_count=0)


@pytest.mark.parametrize("block_size", [1, 3, 5, 16])
def test_word_windows_predict_every_character_once(block_size):
    """The windows a sequence model trains on (training.Minibatches with whole_words) hold, over all
    their columns, every target of the split exactly once, with its own word's context."""
    import torch

    from makemore.models.base import dense_targets

    words = ["emma", "ab", "x", "abcdefghij", "hijklmnopqrstuvw"]
    examples = Examples.from_words(words, Vocab.from_words(words))
    ends = examples.word_windows(block_size)
    assert np.all(np.diff(ends) > 0)
    assert set(examples.starts + [len(w) for w in words]) <= set(ends.tolist())  # every word's end
    X, Y = examples.batch(ends, block_size)
    predicted = dense_targets(torch.from_numpy(X), torch.from_numpy(Y)).numpy()
    # column t of the window ending at p predicts position p - block_size + 1 + t
    where = ends[:, None] - block_size + 1 + np.arange(block_size)[None, :]
    covered = np.sort(where[predicted >= 0])
    assert covered.tolist() == list(range(len(examples)))
    assert np.array_equal(predicted[predicted >= 0], examples.ids[where[predicted >= 0]].astype(np.int64))


def test_characters_missing_from_a_long_text_are_one_short_line():
    from makemore.data import Vocab

    vocab = Vocab.from_words(["abc"])
    text = "abcxyz" * 5000
    with pytest.raises(UserError) as raised:
        vocab.encode(text)
    message = str(raised.value)
    assert "'xyz'" in message and f"({len(text):,} characters)" in message and len(message) < 200
