import hashlib
import http.server
import threading

import pytest

from makemore.data import (NAMES_SHA256, Vocab, build_examples, load_corpus, read_words, resolve_data,
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
