"""The page of `makemore serve` in a real browser: headless Chromium (Debian's `chromium`
package, installed by `make test` through scripts/chromium.sh), driven by Playwright, against
the server on a free port (in a thread of this process; test_serve.py starts the command
itself). Playwright's own browser download is never used. Locally these tests skip when there
is no chromium; in CI (CI set) they fail."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from makemore import serve
from test_serve import ALPHABETS, Client, make_labelled_run, make_serve_runs

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("MAKEMORE_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                      shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser tests (make test installs chromium)")
    pytest.skip(reason)


@contextmanager
def serving(*runs: Path):
    """The server of `makemore serve RUNS --port 0`, in a background thread; yields its URL."""
    srv = serve.Server(serve.create_app(list(runs)), serve.bind("127.0.0.1", 0)).start()
    try:
        yield srv.url
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return make_serve_runs(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def url(runs):
    with serving(runs["run"], runs["ensemble"]) as url:
        yield url


@pytest.fixture
def page(browser, url):
    """A fresh page on the server; fails the test on any script error or on any request that
    goes anywhere but the server (the page must work offline)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors, foreign = [], []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("request", lambda r: foreign.append(r.url) if not (r.url.startswith(url) or r.url.startswith("data:")) else None)
    pg.console_errors = errors  # a test that provokes an error takes its own out of this list
    pg.goto(url)
    yield pg
    context.close()
    assert not errors, errors
    assert not foreign, foreign


def sample_texts(page) -> list[str]:
    return page.locator("#samples li.sample .text").all_inner_texts()


def test_opens_with_tagged_samples(page):
    page.wait_for_selector("#samples li.sample")
    items = page.locator("#samples li.sample")
    assert items.count() == 20
    for i in range(items.count()):
        tag = items.nth(i).get_attribute("data-tag")
        assert tag in ("train", "dev", "test", "new")
        assert items.nth(i).locator(".tag").inner_text() == tag  # shown with its tag
    assert page.locator("#run-params").inner_text().endswith("parameters")
    assert page.locator("#label-label").is_hidden()  # a list of words: no label picker


def test_draw_again_with_a_prefix(page):
    page.wait_for_selector("#samples li.sample")
    first = sample_texts(page)
    page.fill("#n", "12")
    page.fill("#prefix", "ma")
    page.fill("#seed", "3")
    page.click("#draw")
    page.wait_for_function("() => document.querySelector('#sample-status').textContent.includes('seed 3')")
    texts = sample_texts(page)
    assert len(texts) == 12 and texts != first[:12]
    assert all(t.startswith("ma") for t in texts), texts


def test_draw_with_conditions(page, url):
    """ends with, contains, length from/to and leave out: the names shown meet them all, and are
    the API's for the same request."""
    page.wait_for_selector("#samples li.sample")
    page.fill("#n", "15")
    page.fill("#suffix", "a")
    page.fill("#contains", "n")
    page.fill("#min-len", "4")
    page.fill("#max-len", "7")
    page.fill("#exclude", "mana\nnana\n")
    page.fill("#seed", "8")
    page.click("#draw")
    page.wait_for_function("() => document.querySelector('#sample-status').textContent.includes('seed 8')")
    texts = sample_texts(page)
    assert len(texts) == 15
    assert all(t.endswith("a") and "n" in t and 4 <= len(t) <= 7 and t not in ("mana", "nana") for t in texts), texts
    _, data = Client(url).post("/api/sample", {"n": 15, "seed": 8, "suffix": "a", "contains": "n", "min_len": 4,
                                               "max_len": 7, "exclude": ["mana", "nana"], "temperature": 1})
    assert texts == [s["text"] for s in data["samples"]]


def test_a_bad_setting_shows_the_servers_error(page):
    page.wait_for_selector("#samples li.sample")
    page.fill("#prefix", "ma!")
    page.click("#draw")
    page.wait_for_selector("#sample-status.error")
    assert "vocabulary" in page.inner_text("#sample-status")
    assert len(page.console_errors) == 1 and "400" in page.console_errors[0]  # the browser logs the 400
    page.console_errors.clear()
    page.fill("#prefix", "")
    page.fill("#min-len", "9")
    page.fill("#max-len", "3")
    page.click("#draw")
    page.wait_for_function("() => document.querySelector('#sample-status').textContent.includes('minimum length')")
    assert "the minimum length 9 is above the maximum length 3" in page.inner_text("#sample-status")
    page.console_errors.clear()


def test_explain_a_name_row_per_character(page, url):
    page.wait_for_selector("#samples li.sample")
    page.fill("#explain-word", "mana")
    page.click("#explain-form button")
    page.wait_for_selector("#explain-table tr.char-row")
    rows = page.locator("#explain-table tr.char-row")
    assert rows.count() == 5  # m, a, n, a and the end
    assert rows.locator(".next").all_inner_texts() == ["m", "a", "n", "a", "<end>"]
    _, data = Client(url).post("/api/score", {"words": ["mana"]})
    expected = data["scores"][0]
    assert f"perplexity {expected['perplexity']:.2f}" in page.inner_text("#explain-summary")
    assert rows.nth(0).locator(".top .alt").count() == 5
    # clicking a sample explains it
    page.locator("#samples li.sample").first.click()
    name = page.locator("#samples li.sample .text").first.inner_text()
    page.wait_for_function(f"() => document.querySelector('#explain-summary').textContent.startsWith({json.dumps(name + ':')})")
    assert page.locator("#explain-table tr.char-row").count() == len(name) + 1


def test_scatter_and_curves_render(page, url):
    page.wait_for_selector("#scatter svg g.point")
    _, emb = Client(url).get("/api/embeddings")
    assert page.locator("#scatter g.point").count() == len(emb["chars"])
    # hover a dot that no other dot covers (two characters may sit on one spot)
    char = page.evaluate("""() => [...document.querySelectorAll('#scatter g.point')].map((g) => {
        const r = g.getBoundingClientRect();
        const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
        return top && top.closest('g.point') === g ? g.dataset.char : null; }).find((c) => c && c !== '.')""")
    page.hover(f"#scatter svg > g.point[data-char='{char}']")
    i = emb["chars"].index(char)
    text = page.inner_text("#neighbours")
    assert text.startswith(f"{char}: nearest ")
    shown = [part.split(" (")[0] for part in text.split("nearest ", 1)[1].split("), ")]
    assert shown == [n["char"] for n in emb["neighbours"][i]]
    assert page.locator("#scatter svg > g.point.neighbour").count() == len(emb["neighbours"][i])
    assert page.locator("#scatter svg > g.point.active").get_attribute("data-char") == char
    page.mouse.move(1, 1)
    assert page.locator("#scatter svg > g.point.neighbour").count() == 0
    page.wait_for_selector("#curves svg path.curve")
    paths = page.locator("#curves path.curve")
    assert paths.count() == 2  # train and dev
    assert all(len(paths.nth(i).get_attribute("d")) > 20 for i in range(2))


def test_run_picker_switches_to_the_ensemble(page):
    page.wait_for_selector("#samples li.sample")
    assert page.locator("#run-picker option").count() == 2
    page.select_option("#run-picker", "ens")
    page.wait_for_function("() => document.querySelector('#run-info .kind').textContent === 'ensemble of 2'")
    page.wait_for_function("() => document.querySelectorAll('#curves path.curve').length === 4")  # 2 members x train/dev
    page.wait_for_function("() => document.querySelector('#sample-status').textContent.includes('from ens')")
    assert page.locator("#samples li.sample").count() == 20
    page.click("#run-config summary")
    assert "model.emb_dim" in page.inner_text("#run-config")


def test_a_labelled_run_has_a_label_picker_and_a_posterior(browser, tmp_path_factory):
    """A run trained with --labels: the label picker ("any label", then each label with its
    share) draws one label's items; explaining a name shows its posterior over the labels."""
    run = make_labelled_run(tmp_path_factory.getbasetemp())
    with serving(run) as url:
        pg = browser.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(url)
        pg.wait_for_selector("#samples li.sample")
        assert pg.locator("#label-picker").is_visible()
        options = pg.locator("#label-picker option").all_inner_texts()
        assert options[0] == "any label" and [o.split(" ")[0] for o in options[1:]] == ["A", "B"]
        assert all(pg.locator("#samples li.sample").nth(i).get_attribute("data-label") in ("A", "B")
                   for i in range(pg.locator("#samples li.sample").count()))  # any label: each sample's shown
        pg.select_option("#label-picker", "B")
        pg.fill("#temperature", "0.5")
        pg.fill("#seed", "2")
        pg.click("#draw")
        pg.wait_for_function("() => document.querySelector('#sample-status').textContent.includes('labelled B')")
        texts = sample_texts(pg)
        assert texts and all(set(t) <= set(ALPHABETS["B"]) for t in texts), texts
        pg.fill("#explain-word", "xyzzy")
        pg.click("#explain-form button")
        pg.wait_for_selector("#explain-posterior tr.label-row")
        rows = pg.locator("#explain-posterior tr.label-row .label-name").all_inner_texts()
        assert rows == ["B", "A"]  # most probable first
        assert "as B (its most probable label)" in pg.inner_text("#explain-summary")
        pg.select_option("#explain-label", "A")
        pg.click("#explain-form button")
        pg.wait_for_function("() => document.querySelector('#explain-summary').textContent.startsWith('xyzzy as A:')")
        pg.close()
        assert not errors, errors


def test_curves_follow_a_run_that_is_still_training(browser, runs, tmp_path):
    from makemore.rundir import RunLock

    live = tmp_path / "live"
    shutil.copytree(runs["run"], live)
    (live / "summary.json").unlink()  # as while training: summary.json comes at the end
    with RunLock(live), serving(live) as url:  # the lock a training process holds
        pg = browser.new_page()
        pg.goto(url)
        pg.wait_for_selector("#live:not([hidden])")
        assert "step 300 so far" in pg.inner_text("#curves-note")
        with open(live / "metrics.csv", "a") as f:
            f.write("400,1.0,1.1,0.01,3.0\n")
        pg.wait_for_function("() => document.querySelector('#curves-note').textContent.includes('step 400 so far')",
                             timeout=15000)
        pg.close()
