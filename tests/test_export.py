"""`makemore export` (export.py): ONNX for every model, checked with ONNX Runtime against the
run's predictor (and `makemore score`) on real contexts and on every padding; the JSON file read
back into the model; the HTML page in headless Chromium from a file:// URL (the browser tests'
Chromium, test_serve_browser.py), its sampler against the model and its constraints; and the
command's errors, each one line with nothing left behind."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_words
from makemore import export, rundir
from makemore.cli import main
from makemore.data import Examples
from makemore.mixture import run_predictor
from makemore.runs import load_run
from makemore.sampling import score
from test_bad_input import assert_one_line_and_nothing_left

FAST = ["--batch-size", "32", "--lr", "0.01", "--optimizer", "adamw", "--schedule", "constant", "--steps", "40",
        "--quiet"]
SEQ = ["--block-size", "6", "--emb-dim", "8"]  # a window shorter than the longest words: rows with no padding too
# name -> the flags of a small run of it (adaptive: an adaptive softmax over the 13 characters, head 4;
# hashed: hashed context features, models/mlp.py)
RUNS = {
    "mlp": ["--model", "mlp", "--block-size", "3", "--emb-dim", "6", "--hidden", "24", "--layers", "2", "--direct"],
    "bigram": ["--model", "bigram", "--lr", "0.1"],
    "rnn": ["--model", "rnn", *SEQ, "--hidden", "16"],
    "gru": ["--model", "gru", *SEQ, "--hidden", "16"],
    "bow": ["--model", "bow", *SEQ, "--hidden", "16"],
    "transformer": ["--model", "transformer", *SEQ, "--layers", "2", "--heads", "2"],
    "wavenet": ["--model", "wavenet", "--block-size", "4", "--emb-dim", "6", "--hidden", "16"],
    "mlp-adaptive": ["--model", "mlp", "--block-size", "4", "--emb-dim", "6", "--hidden", "24", "--direct",
                     "--softmax", "adaptive", "--softmax-head", "4"],
    "mlp-hashed": ["--model", "mlp", "--block-size", "4", "--emb-dim", "6", "--hidden", "24", "--hash-orders", "4",
                   "--hash-bits", "8", "--hash-dim", "4"],
    "gru-adaptive": ["--model", "gru", *SEQ, "--hidden", "16", "--cell", "cudnn", "--softmax", "adaptive",
                     "--softmax-head", "4"],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A word list, a small run of every model (and two with an adaptive softmax), a plain file."""
    tmp = tmp_path_factory.mktemp("export")
    data = tmp / "words.txt"
    data.write_text("\n".join(make_words(400)) + "\n")
    for name, flags in RUNS.items():
        assert main(["train", "--data", str(data), "--out", str(tmp / name), *FAST, *flags]) == 0
    (tmp / "file.txt").write_text("not a folder")
    return tmp


def padded_contexts(block_size: int, vocab_size: int, n: int = 96, seed: int = 0) -> np.ndarray:
    """Random contexts of every padding, from none (a full window of characters) to all."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, block_size), dtype=np.int64)
    for i in range(n):
        length = i % (block_size + 1)
        if length:
            X[i, block_size - length:] = rng.integers(1, vocab_size, length)
    return X


def all_contexts(run) -> np.ndarray:
    """Every context of the run's dev and train splits."""
    examples = Examples.from_words(run.splits["dev"] + run.splits["train"], run.vocab)
    return examples.contexts(np.arange(len(examples)), run.model_cfg.block_size)


# ----------------------------------------------------------------------------------------
# ONNX


@pytest.fixture(scope="module")
def onnx_files(world, tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("onnx")
    files = {}
    for name in RUNS:
        files[name] = out / f"{name}.onnx"
        assert main(["export", str(world / name), "--format", "onnx", "--out", str(files[name])]) == 0
    return files


@pytest.mark.parametrize("name", list(RUNS))
def test_onnx_gives_the_runs_log_probs_on_real_contexts_and_every_padding(world, onnx_files, name):
    import onnx
    import onnxruntime as ort

    run = load_run(world / name)
    proto = onnx.load(str(onnx_files[name]))
    assert [i.name for i in proto.graph.input] == ["idx"] and [o.name for o in proto.graph.output] == ["log_probs"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert dims[0].dim_param and dims[1].dim_value == run.model_cfg.block_size  # a dynamic batch, a fixed window
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["makemore.vocab"]) == list(run.vocab.chars)
    assert meta["makemore.model"] == run.model_cfg.name and meta["makemore.format"] == export.ONNX_FORMAT

    session = ort.InferenceSession(str(onnx_files[name]), providers=["CPUExecutionProvider"])
    predictor = run_predictor(run)
    for X in (all_contexts(run), padded_contexts(run.model_cfg.block_size, run.vocab.size)):
        got = export.onnx_log_probs(session, X)
        with torch.no_grad():
            expected = predictor(torch.from_numpy(X)).numpy()
        assert got.shape == expected.shape == (len(X), run.vocab.size)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0, atol=1e-5)
        # the batch axis is dynamic: one row alone gives what it gives among others
        np.testing.assert_allclose(export.onnx_log_probs(session, X[-1:]), got[-1:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["mlp", "transformer", "gru-adaptive"])
def test_onnx_word_scores_are_makemore_scores(world, onnx_files, name):
    import onnxruntime as ort

    run = load_run(world / name)
    words = run.splits["dev"][:20] + ["anjaroso"]
    examples = Examples.from_words(words, run.vocab)
    X, Y = examples.batch(np.arange(len(examples)), run.model_cfg.block_size)
    logp = export.onnx_log_probs(ort.InferenceSession(str(onnx_files[name])), X)[np.arange(len(Y)), Y]
    scored = score(run_predictor(run), run.vocab, words)
    ends = np.cumsum([len(w) + 1 for w in words])
    for r, lp in zip(scored, np.split(logp, ends[:-1])):
        assert r["nll"] == pytest.approx(-lp.sum(), abs=1e-3)


def test_a_graph_that_disagrees_with_the_model_is_not_written(world, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(export, "ONNX_TOLERANCE", -1.0)
    with pytest.raises(export.UserError, match="disagrees"):
        export.export(world / "bigram", "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------
# JSON


@pytest.mark.parametrize("name", list(RUNS))
def test_json_reads_back_into_the_same_model(world, tmp_path, name):
    out = tmp_path / f"{name}.json"
    assert main(["export", str(world / name), "--out", str(out)]) == 0  # the format from the extension
    doc = json.loads(out.read_text(encoding="utf-8"))
    run = load_run(world / name)
    assert doc["format"] == export.JSON_FORMAT and doc["model"] == run.model_cfg.name
    assert doc["config"] == rundir.read_config(world / name)
    assert doc["vocab"]["chars"] == run.vocab.chars
    for key, value in run.model.state_dict().items():
        t = doc["tensors"][key]
        assert t["shape"] == list(value.shape) and len(t["data"]) == value.numel()
    model, vocab, config = export.load_json(out)
    assert vocab.chars == run.vocab.chars and config == doc["config"]
    for key, value in run.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key  # float32 read back exactly
    X = torch.from_numpy(padded_contexts(run.model_cfg.block_size, run.vocab.size))
    with torch.no_grad():
        assert torch.equal(model.logits_fn()(X), run.model.logits_fn()(X))


def test_json_that_is_not_an_export_is_one_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(export.UserError, match="not a makemore JSON export"):
        export.load_json(bad)


# ----------------------------------------------------------------------------------------
# HTML, in headless Chromium


@pytest.fixture(scope="module")
def pages(world, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("pages")
    files = {}
    for name in ("mlp", "bigram", "mlp-adaptive"):
        files[name] = out / f"{name}.html"
        assert main(["export", str(world / name), "--format", "html", "--out", str(files[name])]) == 0
    return files


@pytest.fixture
def open_page(browser):
    """Opens a page file from its file:// URL; fails the test on any script error or any request
    that is not for the file itself (the page works with no network)."""
    contexts = []
    errors, foreign = [], []

    def opener(path: Path):
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: None if r.url == path.as_uri() or r.url.startswith("data:")
                else foreign.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_function("window.makemore !== undefined")
        return page

    yield opener
    for context in contexts:
        context.close()
    assert errors == [] and foreign == [], (errors, foreign)


def js_sample(page, **options) -> dict:
    return page.evaluate("(o) => window.makemore.sample(o)", options)


@pytest.mark.parametrize("name", ["mlp", "bigram", "mlp-adaptive"])
def test_the_page_draws_20_names_when_opened(world, pages, open_page, name):
    page = open_page(pages[name])
    samples = page.locator(".sample")
    assert samples.count() == 20
    run = load_run(world / name)
    names = samples.all_inner_texts()
    assert all(n and set(n) <= set(run.vocab.chars[1:]) for n in names), names  # never empty
    assert page.locator("#status").inner_text() == ""
    assert page.title() == f"makemore: {name}"


@pytest.mark.parametrize("name", ["mlp", "bigram", "mlp-adaptive"])
def test_the_pages_model_is_the_runs(world, pages, open_page, name):
    """The sampler's forward pass in JavaScript gives the run's log-probabilities."""
    page = open_page(pages[name])
    run = load_run(world / name)
    X = all_contexts(run)[::7][:150]
    got = np.array(page.evaluate("(xs) => xs.map((x) => window.makemore.logProbs(x))", X.tolist()))
    with torch.no_grad():
        expected = run_predictor(run)(torch.from_numpy(X)).double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def greedy(run, prefix: str = "", longest: int = 64) -> str:
    """The name of the likeliest character at every step (what temperature -> 0 draws), the end
    held back until there is a character."""
    predictor, ids = run_predictor(run), [0] * run.model_cfg.block_size + run.vocab.encode(prefix)
    text = prefix
    while len(text) < longest:
        with torch.no_grad():
            logp = predictor(torch.tensor([ids[-run.model_cfg.block_size:]]))[0]
        if not text:
            logp[0] = -math.inf
        c = int(logp.argmax())
        if c == 0:
            return text
        text, ids = text + run.vocab.chars[c], ids + [c]
    return text


def test_the_temperature(world, pages, open_page):
    page = open_page(pages["mlp"])
    run = load_run(world / "mlp")
    cold = js_sample(page, n=30, temperature=0.001, seed=1)["names"]
    assert set(cold) == {greedy(run)}
    assert set(js_sample(page, n=10, temperature=0.001, prefix="ri", seed=2)["names"]) == {greedy(run, "ri")}
    warm = js_sample(page, n=300, temperature=1, seed=3)["names"]
    hot = js_sample(page, n=300, temperature=3, seed=3)["names"]
    assert len(set(warm)) < len(set(hot))
    # at temperature 1 the first character is drawn as often as the model says (the same seed, same words)
    assert js_sample(page, n=300, temperature=1, seed=3)["names"] == warm
    with torch.no_grad():
        logp = run_predictor(run)(torch.zeros((1, 3), dtype=torch.long))[0]
    logp[0] = -math.inf  # a name has a character at least
    p_first = torch.softmax(logp, 0).numpy()
    firsts = np.bincount([run.vocab.stoi[w[0]] for w in warm], minlength=run.vocab.size) / len(warm)
    assert np.abs(firsts - p_first).max() < 0.1


def test_the_constraints(world, pages, open_page):
    page = open_page(pages["mlp"])
    result = js_sample(page, n=40, suffix="a", minLength=5, maxLength=7, seed=4)
    assert len(result["names"]) == 40 and result["message"] == ""
    assert all(w.endswith("a") and 5 <= len(w) <= 7 for w in result["names"]), result["names"]
    result = js_sample(page, n=40, prefix="ka", contains="on", maxLength=9, seed=5)
    assert len(result["names"]) == 40
    assert all(w.startswith("ka") and "on" in w and len(w) <= 9 for w in result["names"]), result["names"]
    # the length limits hold while decoding, whatever the model would rather do
    short = js_sample(page, n=50, maxLength=2, seed=6)["names"]
    assert all(1 <= len(w) <= 2 for w in short) and any(len(w) == 2 for w in short)
    long = js_sample(page, n=20, minLength=12, seed=7)["names"]
    assert len(long) == 20 and all(len(w) >= 12 for w in long)
    assert js_sample(page, n=5, minLength=3, maxLength=3, seed=8)["names"] and \
        all(len(w) == 3 for w in js_sample(page, n=5, minLength=3, maxLength=3, seed=8)["names"])


@pytest.mark.parametrize("options, message", [
    ({"contains": "an" * 9, "maxLength": 20}, f"No name containing “{'an' * 9}” found in 10,000 tries"),
    ({"contains": "x"}, "the model never writes “x”"),
    ({"suffix": "."}, "end-of-name token"),
    ({"prefix": "q"}, "“q” is not in the model's vocabulary"),
    ({"minLength": 6, "maxLength": 4}, "min length (6) is more than max length (4)"),
    ({"prefix": "anjaro", "maxLength": 4}, "more than max length"),
    ({"temperature": 0}, "temperature must be a positive number"),
    ({"minLength": 0}, "min length must be a whole number, 1 or more"),
])
def test_impossible_or_bad_constraints_say_so(pages, open_page, options, message):
    page = open_page(pages["mlp"])
    result = js_sample(page, n=20, seed=9, **options)
    assert result["names"] == [] and result["error"] and message in result["message"], result


def test_a_vocabulary_with_an_unknown_token(world, tmp_path, open_page):
    """Rare characters folded into the unknown-character token (--min-char-count): the page never
    draws the token, and reads a prefix's unknown characters as it, as makemore does."""
    data = tmp_path / "words.txt"
    data.write_text("\n".join(make_words(400) + ["xana", "ranaq"]) + "\n")
    run_dir, page_file = tmp_path / "run", tmp_path / "page.html"
    assert main(["train", "--data", str(data), "--out", str(run_dir), "--min-char-count", "2", *FAST,
                 *RUNS["bigram"]]) == 0
    run = load_run(run_dir)
    assert run.vocab.unk is not None and "x" not in run.vocab.chars
    assert main(["export", str(run_dir), "--out", str(page_file)]) == 0
    page = open_page(page_file)
    names = js_sample(page, n=200, seed=1)["names"]
    assert names and not any(run.vocab.unk in w for w in names)
    assert all(w.startswith("xa") for w in js_sample(page, n=10, prefix="xa", seed=2)["names"])
    X = all_contexts(run)[::5][:100]
    got = np.array(page.evaluate("(xs) => xs.map((x) => window.makemore.logProbs(x))", X.tolist()))
    with torch.no_grad():
        np.testing.assert_allclose(got, run_predictor(run)(torch.from_numpy(X)).double().numpy(), atol=1e-5)


def test_the_form(pages, open_page):
    page = open_page(pages["mlp"])
    page.fill("#n", "12")
    page.fill("#temperature", "0.7")
    page.fill("#prefix", "ma")
    page.fill("#max-length", "6")
    page.click("#draw")
    names = page.locator(".sample").all_inner_texts()
    assert len(names) == 12 and all(w.startswith("ma") and len(w) <= 6 for w in names), names
    page.fill("#contains", "xyz")
    page.click("#draw")
    assert page.locator(".sample").count() == 0
    assert "never writes" in page.locator("#status").inner_text()
    assert "error" in page.locator("#status").get_attribute("class")


# ----------------------------------------------------------------------------------------
# The command's errors: one line, nothing left behind


@pytest.mark.parametrize("name", ["rnn", "transformer", "wavenet"])
def test_html_of_another_model_is_one_line(world, capsys, name):
    line = assert_one_line_and_nothing_left(
        ["export", str(world / name), "--format", "html", "--out", str(world / "page.html")], world, capsys)
    assert "mlp and bigram" in line and name in line


def test_html_of_hashed_features_is_one_line(world, capsys):
    line = assert_one_line_and_nothing_left(
        ["export", str(world / "mlp-hashed"), "--format", "html", "--out", str(world / "page.html")], world, capsys)
    assert "hashed context features" in line and "--format onnx or json" in line


@pytest.mark.parametrize("out, expect", [
    ("file.txt/sub/m.onnx", "is a file"),
    ("mlp", "is a folder"),
    ("/proc/makemore-out/m.html", ""),
    ("model.bin", "--format"),
])
def test_a_bad_out_is_one_line(world, capsys, out, expect):
    out = out if out.startswith("/") else str(world / out)
    assert_one_line_and_nothing_left(["export", str(world / "mlp"), "--out", out], world, capsys, expect)


def test_an_ensemble_or_a_missing_run_is_one_line(world, capsys, tmp_path):
    ens = tmp_path / "ens"
    assert main(["ensemble", str(world / "mlp"), str(world / "mlp-adaptive"), "--out", str(ens)]) == 0
    line = assert_one_line_and_nothing_left(["export", str(ens), "--out", str(tmp_path / "e.json")], tmp_path, capsys)
    assert "ensemble" in line and "member" in line
    assert_one_line_and_nothing_left(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "e.json")],
                                     tmp_path, capsys, "not found")


def test_a_mixture_result_needs_neural(world, capsys, tmp_path):
    import shutil

    run = tmp_path / "mixed"
    shutil.copytree(world / "mlp", run)
    rundir.write_mixture(run, {"weight": 0.6, "mlp_dev_loss": 2.0, "ngram_dev_loss": 2.1, "mix_dev_loss": 1.9,
                               "ngram_context": 3, "discount": 0.75, "result": "mixture"})
    line = assert_one_line_and_nothing_left(["export", str(run), "--out", str(tmp_path / "m.html")], tmp_path, capsys)
    assert "--neural" in line and "mixture" in line
    assert main(["export", str(run), "--out", str(tmp_path / "m.html"), "--neural"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "m.json")]) == 0  # the weights are the weights
    assert json.loads((tmp_path / "m.json").read_text())["mix"]["weight"] == 0.6  # with the mixture recorded


def test_the_python_exporters_check_what_the_command_checks(world, tmp_path):
    """export_onnx / export_json / export_html take a run directory or a loaded run, and refuse
    what `makemore export` refuses (a mixture's result without neural, a labelled run but in
    JSON, an ensemble), writing nothing."""
    import shutil

    import makemore as mm
    from makemore.errors import UserError

    mixed = tmp_path / "mixed"
    shutil.copytree(world / "mlp", mixed)
    rundir.write_mixture(mixed, {"weight": 0.6, "mlp_dev_loss": 2.0, "ngram_dev_loss": 2.1, "mix_dev_loss": 1.9,
                                 "ngram_context": 3, "discount": 0.75, "result": "mixture"})
    for given in (mixed, str(mixed), mm.load_run(mixed)):
        with pytest.raises(UserError, match="--neural"):
            export.export_html(given, tmp_path / "m.html")
    assert not (tmp_path / "m.html").exists()
    assert export.export_html(mm.load_run(mixed), tmp_path / "m.html", neural=True)["model"] == "mlp"
    assert export.export_json(str(mixed), tmp_path / "m.json")["run"] == str(mixed)
    ens = tmp_path / "ens"
    assert main(["ensemble", str(world / "mlp"), str(world / "mlp-adaptive"), "--out", str(ens)]) == 0
    with pytest.raises(UserError, match="ensemble"):
        export.export_json(mm.load_ensemble(ens), tmp_path / "e.json")


def test_a_format_the_name_contradicts_is_refused(world, tmp_path, capsys):
    page = tmp_path / "lec.html"
    page.write_text("<html>a page</html>")
    line = assert_one_line_and_nothing_left(["export", str(world / "mlp"), "--format", "onnx", "--out", str(page)],
                                            tmp_path, capsys)
    assert "names the html format" in line and page.read_text() == "<html>a page</html>"


def test_missing_onnx_packages_say_what_to_install(world, capsys, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    line = assert_one_line_and_nothing_left(["export", str(world / "mlp"), "--out", str(tmp_path / "m.onnx")],
                                            tmp_path, capsys)
    assert "pip install" in line and "onnxruntime" in line


def test_the_output_line_and_json(world, capsys, tmp_path):
    out = tmp_path / "b.html"
    assert main(["export", str(world / "bigram"), "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "html" and info["model"] == "bigram" and info["bytes"] == out.stat().st_size
    assert math.isclose(info["params"], load_run(world / "bigram").model.num_params())
    assert out.stat().st_mode & 0o044  # an export is made to be shared: not atomic_write's 0600
