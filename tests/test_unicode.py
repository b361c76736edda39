"""Unicode done right: text read in NFC by default, and extended grapheme clusters as symbols.

A file holding "café" precomposed (U+00E9) and decomposed (e + U+0301) is one word in NFC, and
the vocabulary has no lone combining accent. With `--units grapheme`, a decomposed accent, a
Hangul syllable written as conjoining jamo, an emoji with a skin-tone modifier and a ZWJ family
are each one symbol: a model trained on them never samples a piece of one.
"""

import json
import random
import unicodedata

import numpy as np
import pytest
import torch

import makemore as mm
from makemore.cli import main
from makemore.data import Vocab, graphemes, load_corpus, read_words
from makemore.errors import UserError
from makemore.runs import load_run

CAFE_NFC, CAFE_NFD = "caf\u00e9", "cafe\u0301"
ACUTE = "e\u0301"  # é decomposed: two code points, one grapheme
JAMO = "\u1100\u1161\u11a8"  # 각 written as three conjoining jamo
THUMB = "\U0001F44D\U0001F3FD"  # thumbs up, medium skin tone
FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"  # man ZWJ woman ZWJ girl ZWJ boy
DEVANAGARI = "\u0938\u094d\u0924\u0947"  # स्ते: one cluster (a conjunct with its vowel sign)
CLUSTERS = (ACUTE, JAMO, THUMB, FAMILY, DEVANAGARI)
TRAIN = ["--preset", "lecture", "--hidden", "32", "--emb-dim", "4", "--steps", "100", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny products, one thread


def unicode_words(n: int = 300, seed: int = 0) -> list[str]:
    """Name-like words whose syllables include every multi-code-point cluster above."""
    rng = random.Random(seed)
    syllables = ["an", "ma", "ri", "so", "ka", "li", *CLUSTERS]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def write(path, words) -> str:
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def grapheme_run(tmp_path_factory):
    """A run on decomposed text kept as it is (--normalize none), grapheme clusters as symbols."""
    tmp = tmp_path_factory.mktemp("grapheme")
    data = write(tmp / "words.txt", unicode_words())
    run = tmp / "run"
    assert main(["train", "--data", data, "--out", str(run), "--units", "grapheme", "--normalize", "none",
                 *TRAIN]) == 0
    return data, run


@pytest.fixture(scope="module")
def nfc_run(tmp_path_factory):
    """A code-point run on the same words, read in NFC (the default)."""
    tmp = tmp_path_factory.mktemp("nfc")
    data = write(tmp / "words.txt", unicode_words())
    run = tmp / "run"
    assert main(["train", "--data", data, "--out", str(run), *TRAIN]) == 0
    return data, run


# --------------------------------------------------------------------------------------------
# NFC


def test_composed_and_decomposed_cafe_are_one_word(tmp_path):
    words = [CAFE_NFC, CAFE_NFD, "cafe", "the"] * 5
    data = write(tmp_path / "cafe.txt", words)
    corpus = load_corpus(data)
    assert corpus.normalize == "nfc" and set(corpus.words) == {CAFE_NFC, "cafe", "the"}
    assert corpus.words.count(CAFE_NFC) == 10
    assert "\u0301" not in corpus.vocab.chars and "\u00e9" in corpus.vocab.chars
    assert corpus.stats(3)["distinct_words"] == 3 and corpus.stats(3)["combining_symbols"] == []


def test_normalize_none_keeps_the_text_as_it_is(tmp_path):
    words = [CAFE_NFC, CAFE_NFD, "cafe", "the"] * 5
    data = write(tmp_path / "cafe.txt", words)
    assert read_words(data, normalize="none") == words
    corpus = load_corpus(data, normalize="none")
    assert corpus.words == words and len(set(corpus.words)) == 4
    # today's vocabulary: every code point, the lone accent among them
    assert corpus.vocab == Vocab.from_words(words)
    assert corpus.vocab.chars == "." + "".join(sorted(set("".join(words))))
    assert corpus.stats(3)["combining_symbols"] == ["\u0301"]
    with pytest.raises(UserError, match="normalize"):
        load_corpus(data, normalize="nfd")
    with pytest.raises(UserError, match="units"):
        load_corpus(data, units="word")


def test_samples_are_nfc_even_when_two_symbols_compose():
    """q + U+0303 has no precomposed form, so NFC text keeps the lone tilde as a character; a
    code-point model can draw it after an e, and e + U+0303 is U+1EBD in NFC: samples come out so."""
    vocab = Vocab.from_words(["q\u0303", "e"], normalize="nfc")
    assert "\u0303" in vocab.chars
    model_cfg, _ = mm.make_configs("tiny2d", vocab_size=vocab.size)
    model = mm.MLP(model_cfg, seed=0).eval()
    with torch.no_grad():  # the same distribution after every context: e, q, tilde alike, ends rarer
        model.W_out.zero_()
        model.b_out.fill_(1.0)
        model.b_out[0] = 0.0
    drawn = mm.sample(mm.model_predictor(model), vocab, 300, seed=1)
    assert all(unicodedata.is_normalized("NFC", w) for w in drawn)
    assert any("\u1ebd" in w for w in drawn)  # composed
    raw = mm.sample(mm.model_predictor(model), Vocab(vocab.chars, normalize="none"), 300, seed=1)
    assert any("e\u0303" in w for w in raw)  # with "none", as drawn


def test_a_trained_models_samples_are_nfc(nfc_run, capsys):
    _, run = nfc_run
    loaded = load_run(run)
    assert loaded.normalize == "nfc" and loaded.units == "codepoint"
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["normalize"] == "nfc" and config["data"]["units"] == "codepoint"
    assert "\u0301" not in loaded.vocab.chars  # the decomposed accents were composed when read
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "200", "--seed", "2"]) == 0
    samples = capsys.readouterr().out.splitlines()
    assert len(samples) == 200 and all(unicodedata.is_normalized("NFC", w) for w in samples)


# --------------------------------------------------------------------------------------------
# Grapheme clusters as symbols


@pytest.mark.parametrize("cluster", CLUSTERS, ids=["acute", "jamo", "skin-tone", "zwj-family", "devanagari"])
def test_a_cluster_is_one_symbol(cluster):
    words = [f"a{cluster}b", cluster, "ab"]
    vocab = Vocab.from_words(words, units="grapheme")
    assert cluster in vocab.chars and vocab.units == "grapheme"
    assert len(cluster) > 1 and vocab.symbols(f"a{cluster}b") == ["a", cluster, "b"]
    assert vocab.encode(f"a{cluster}b") == [vocab.stoi["a"], vocab.stoi[cluster], vocab.stoi["b"]]
    assert vocab.decode(vocab.encode(f"a{cluster}b")) == f"a{cluster}b"
    assert vocab.length(f"a{cluster}b") == 3 and list(vocab.lengths(words)) == [3, 1, 2]
    assert vocab.encode_array(f"a{cluster}b").tolist() == vocab.encode(f"a{cluster}b")
    # no piece of the cluster is a symbol of its own
    assert not any(c in vocab.stoi for c in cluster)
    examples = mm.Examples.from_words(words, vocab)
    assert examples.ids.tolist() == [*vocab.encode(f"a{cluster}b"), 0, vocab.stoi[cluster], 0,
                                     *vocab.encode("ab"), 0]
    code_points = Vocab.from_words(words)
    assert all(c in code_points.stoi for c in cluster)  # what --units codepoint does instead


def test_words_starting_with_a_mark_do_not_glue_to_the_word_before():
    """The words are cut in one regex call over them joined by line feeds: a word beginning
    with a combining mark, or ending with a prepended concatenation mark (U+0600), stays apart."""
    words = ["\u0301x", "a\u0600", "b", "c\r", "d\ne"]
    vocab = Vocab.from_words(words, units="grapheme")
    ids, lengths = vocab.encode_words(words)
    assert lengths.tolist() == [3, 3, 2, 3, 4]  # symbols + the end of each word
    assert vocab.decode(ids).split(vocab.boundary)[:-1] == words


def test_the_fast_cut_agrees_with_the_regex():
    """_Clusters runs the regex only around code points that can join a neighbour; on random
    text drawn from every kind of them (marks, joiners, spacing and prepended marks, viramas
    and Indic consonants, regional indicators, Hangul jamo and syllables, emoji and modifiers,
    CR and LF) it cuts exactly where \\X does."""
    from makemore.vocab import _Clusters

    pool = ["a", "e", "\u0301", "\u0308", "\u200d", "\u200c", "\ufe0f", "\u0915", "\u0937", "\u094d",
            "\u093f", "\u0947", "\u0600", "\u0d4e", "\U0001F1EB", "\U0001F1F7", "\u1100", "\u1161",
            "\u11a8", "\uac00", "\uac01", "\U0001F44D", "\U0001F3FD", "\U0001F468", "\r", "\n", "x",
            "\u0e01", "\u0e33", "\u05d0", "\u05b7", "\u4e2d", " "]
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 12)))
        cut = _Clusters.of_text(text)
        assert cut.strings(np.arange(len(cut.starts))) == graphemes(text), ascii(text)
    words = unicode_words(200, seed=1) + ["\u0301x", "a\u0600", "\U0001F1EB\U0001F1F7\U0001F1EB"]
    vocab = Vocab.from_words(words, units="grapheme")
    ids, lengths = vocab.encode_words(words)
    assert vocab.decode(ids) == "".join(w + vocab.boundary for w in words)
    assert lengths.tolist() == [len(graphemes(w)) + 1 for w in words]


def test_a_grapheme_vocabulary_with_an_unknown_token():
    words = [THUMB + "a", THUMB + "b", FAMILY, THUMB] * 3
    vocab = Vocab.from_words(words, min_count=4, units="grapheme")
    assert vocab.unk_id == 1 and FAMILY not in vocab.stoi and THUMB in vocab.stoi
    assert vocab.encode(FAMILY + "a") == [1, 1]
    assert vocab.unknown(FAMILY) == [FAMILY] and vocab.missing(FAMILY) == []
    plain = Vocab.from_words(words[:2], units="grapheme")
    with pytest.raises(UserError, match="grapheme"):
        plain.encode(FAMILY)
    with pytest.raises(UserError, match="grapheme"):
        mm.Examples.from_words([FAMILY], plain)


def test_sampling_never_splits_a_cluster(grapheme_run, capsys):
    _, run = grapheme_run
    loaded = load_run(run)
    assert loaded.units == "grapheme" and loaded.normalize == "none"
    assert set(CLUSTERS) <= set(loaded.vocab.chars)
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "300", "--seed", "5"]) == 0
    samples = capsys.readouterr().out.splitlines()
    assert len(samples) == 300
    stoi = loaded.vocab.stoi
    assert all(g in stoi for w in samples for g in graphemes(w))
    assert any(c in w for w in samples for c in CLUSTERS)  # it does draw them
    # and max_len counts symbols: a family emoji is one step of the 64, not seven
    drawn = mm.sample(mm.model_predictor(loaded.model), loaded.vocab, 50, seed=0, max_len=3)
    assert all(loaded.vocab.length(w) <= 3 for w in drawn)


def test_the_grapheme_run_reloads_as_it_was_read(grapheme_run):
    data, run = grapheme_run
    loaded = load_run(run)
    corpus = load_corpus(data, units="grapheme", normalize="none")
    assert loaded.vocab == corpus.vocab and loaded.splits == corpus.splits
    again = loaded.corpus()
    assert again.vocab == corpus.vocab and again.longest == corpus.longest
    assert (again.encoded("dev").ids == corpus.encoded("dev").ids).all()
    vocab_json = json.loads((run / "vocab.json").read_text())
    assert vocab_json["units"] == "grapheme" and "chars" not in vocab_json
    assert vocab_json["symbols"] == list(corpus.vocab.chars)
    # the same file read with the defaults is another vocabulary: composed accents, characters
    assert load_corpus(data).vocab != corpus.vocab


@pytest.mark.parametrize("units", ["codepoint", "grapheme"])
def test_vocab_json_round_trip(units):
    words = [CAFE_NFD, JAMO, THUMB, FAMILY, "q\u0303"]
    for min_count in (1, 2):
        vocab = Vocab.from_words(words * 2, min_count=min_count, units=units, normalize="none")
        back = Vocab.from_json(json.loads(json.dumps(vocab.to_json(), ensure_ascii=False)))
        assert back == vocab and back.stoi == vocab.stoi and type(back.chars) is type(vocab.chars)


def test_an_old_vocab_json_loads_as_code_points(nfc_run, capsys):
    """A run written before units and normalisation existed: vocab.json holds a "chars" string
    only and config.json's data section neither key: code points, text taken as it is."""
    _, run = nfc_run
    old = run.parent / "old"
    old.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (old / f.name).write_bytes(f.read_bytes())
    vocab_json = json.loads((old / "vocab.json").read_text())
    (old / "vocab.json").write_text(json.dumps({k: vocab_json[k] for k in ("chars", "boundary", "unk")}))
    config = json.loads((old / "config.json").read_text())
    del config["data"]["normalize"], config["data"]["units"]
    (old / "config.json").write_text(json.dumps(config))
    loaded = load_run(old)
    assert loaded.units == "codepoint" and loaded.normalize == "none"
    assert loaded.vocab.chars == load_run(run).vocab.chars
    capsys.readouterr()
    assert main(["score", str(old), "anma", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["word"] == "anma"


# --------------------------------------------------------------------------------------------
# `makemore data`


def test_makemore_data_warns_on_combining_marks(tmp_path, capsys):
    data = write(tmp_path / "w.txt", unicode_words(60))
    assert main(["data", "--data", data, "--normalize", "none"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note:") and "--units grapheme" in err[0]
    assert main(["data", "--data", data, "--normalize", "none", "--json"]) == 0
    captured = capsys.readouterr()
    stats = json.loads(captured.out)
    assert {"\u0301", "\u200d", "\u094d", "\u0947", "\U0001F3FD"} - set(stats["combining_symbols"]) == \
        {"\U0001F3FD"}  # the skin-tone modifier is a symbol (Sk), not a mark
    assert captured.err.startswith("note:")
    # NFC composes the accent (and the jamo), not the joiner: still a note
    assert main(["data", "--data", data, "--json"]) == 0
    captured = capsys.readouterr()
    assert "\u0301" not in json.loads(captured.out)["combining_symbols"] and captured.err.startswith("note:")
    # grapheme units: nothing to warn about; the vocabulary is listed symbol by symbol
    assert main(["data", "--data", data, "--units", "grapheme", "--normalize", "none"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "graphemes" in captured.out and f" {THUMB} " in captured.out
    assert main(["data", "--data", data, "--units", "grapheme", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["combining_symbols"] == [] and FAMILY in stats["vocab"] and stats["units"] == "grapheme"
    plain = write(tmp_path / "plain.txt", ["anna", "bob"] * 10)
    assert main(["data", "--data", plain]) == 0
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------------
# Scoring, prefixes, baselines, embeddings with grapheme clusters


def test_score_and_prefix_with_graphemes(grapheme_run, capsys):
    _, run = grapheme_run
    loaded = load_run(run)
    word = f"ma{FAMILY}{THUMB}"
    capsys.readouterr()
    assert main(["score", str(run), word, "--verbose", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["word"] == word
    assert [c["char"] for c in result["chars"]] == ["m", "a", FAMILY, THUMB, "<end>"]
    assert result["nll_per_char"] == pytest.approx(result["nll"] / 5)
    top = mm.score(mm.model_predictor(loaded.model), loaded.vocab, [word], top=3)[0]
    assert all(e["char"] in loaded.vocab.chars or e["char"] == "<end>" for c in top["chars"] for e in c["top"])
    assert main(["sample", str(run), "-n", "40", "--seed", "1", "--prefix", JAMO]) == 0
    samples = capsys.readouterr().out.splitlines()
    assert len(samples) == 40 and all(w.startswith(JAMO) for w in samples)
    assert all(g in loaded.vocab.stoi for w in samples for g in graphemes(w))
    # a piece of a cluster is not in the vocabulary: one clear error
    assert main(["sample", str(run), "-n", "3", "--prefix", "\u1100"]) == 1
    assert "not in the model's vocabulary" in capsys.readouterr().err


def test_score_and_prefix_are_normalised_as_the_data_was_read(nfc_run, capsys):
    _, run = nfc_run
    loaded = load_run(run)
    predictor = mm.model_predictor(loaded.model)
    composed, decomposed = mm.score(predictor, loaded.vocab, [f"ma{CAFE_NFC[-1]}", f"ma{ACUTE}"])
    assert decomposed["word"] == composed["word"] == f"ma{CAFE_NFC[-1]}"
    assert decomposed["nll"] == composed["nll"]
    drawn = mm.sample(predictor, loaded.vocab, 20, seed=0, prefix=ACUTE)
    assert all(w.startswith("\u00e9") for w in drawn)


def test_ngram_baselines_and_mixture_run_on_graphemes(grapheme_run, capsys):
    data, run = grapheme_run
    capsys.readouterr()
    assert main(["ngram", "--data", data, "--units", "grapheme", "--normalize", "none", "--max-context", "2",
                 "--compare", str(run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["ngram"]
    assert len(rows) == 2 and all(np.isfinite(r["kneser_ney"]["dev_loss"]) for r in rows)
    # the same file read otherwise: per code point against per grapheme would not compare, nor vocabularies
    for other, named in ((["--normalize", "none"], "--units grapheme"),
                         (["--units", "grapheme"], "--normalize none"),
                         (["--units", "grapheme", "--normalize", "none", "--min-char-count", "2"],
                          "--min-char-count 1")):
        assert main(["ngram", "--data", data, *other, "--max-context", "2", "--compare", str(run)]) == 1
        assert f"read its data with {named}; give the same" in capsys.readouterr().err
    # the count model and the mixture the run fitted are the run's result: eval through them
    assert main(["eval", str(run), "--json"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["loss"])
    corpus = load_corpus(data, units="grapheme", normalize="none")
    assert np.isfinite(mm.baselines.add_one_bigram_nll(corpus.words, corpus.vocab))


def test_checkpoint_round_trip_and_resume(grapheme_run, tmp_path):
    """The best checkpoint, loaded with the run's vocabulary, gives the dev loss training
    measured; a copy of the run resumes with the same vocabulary and settings."""
    from makemore.predict import split_nll

    data, run = grapheme_run
    loaded = load_run(run)
    dev = load_corpus(data, units="grapheme", normalize="none").encoded("dev")
    summary = json.loads((run / "summary.json").read_text())
    assert split_nll(mm.model_predictor(loaded.model), dev) == pytest.approx(summary["dev_loss"], rel=1e-5)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    assert main(["train", "--resume", str(copy), "--steps", "120", "--quiet"]) == 0
    resumed = load_run(copy, checkpoint="last")
    assert resumed.vocab == loaded.vocab and resumed.units == "grapheme" and resumed.normalize == "none"
    assert json.loads((copy / "summary.json").read_text())["steps"] == 120


@pytest.mark.filterwarnings("ignore:Glyph")  # the plot's font lacks Devanagari, Hangul, emoji
def test_embeddings_and_serve_views_label_clusters(grapheme_run, tmp_path, capsys):
    from makemore.serve.models import embedding_view, load_model
    from makemore.serve.requests import BadRequest, parse_score

    _, run = grapheme_run
    capsys.readouterr()
    assert main(["embeddings", str(run), "--out", str(tmp_path / "emb.png"), "--json"]) == 0
    neighbours = json.loads(capsys.readouterr().out)["neighbours"]
    assert set(CLUSTERS) <= set(neighbours)
    served = load_model(run)
    view = embedding_view(served)
    assert set(CLUSTERS) <= set(view["chars"]) and len(view["chars"]) == served.vocab.size
    words, _ = parse_score(served, {"words": [f"an{THUMB}"]})
    assert words == [f"an{THUMB}"]
    with pytest.raises(BadRequest, match="grapheme"):
        parse_score(served, {"words": ["an\U0001F44D"]})  # the thumb without its skin tone


def test_sampling_conditions_count_symbols_and_read_text_as_the_data_was(grapheme_run, nfc_run, capsys):
    """Length conditions count a grapheme run's symbols (a family emoji is one), and a suffix is
    read as the data was: typed decomposed, it matches an NFC run's composed samples."""
    from makemore.conditions import Constraints

    _, run = grapheme_run
    loaded = load_run(run)
    predictor = mm.model_predictor(loaded.model)
    drawn = [w for chunk, _ in mm.sampling.sample_chunks(predictor, loaded.vocab, 40, seed=2,
                                                       constraints=Constraints(min_len=3, max_len=4))
             for w in chunk]
    assert len(drawn) == 40 and all(3 <= loaded.vocab.length(w) <= 4 for w in drawn)
    assert any(len(w) > 4 for w in drawn)  # some are longer in code points: counted as symbols
    _, nfc = nfc_run
    capsys.readouterr()
    assert main(["sample", str(nfc), "-n", "5", "--seed", "1", "--contains", ACUTE]) == 0  # typed decomposed
    samples = capsys.readouterr().out.splitlines()
    assert len(samples) == 5 and all("\u00e9" in w for w in samples)
