"""Shared fixtures: the lecture's names file (via $MAKEMORE_DATA_DIR) and small generated data."""

import importlib.util
import os
import random
from pathlib import Path

import pytest

from makemore.data import NAMES_SHA256, _sha256


ROOT = Path(__file__).resolve().parents[1]


def load_file(relative: str):
    """A script of the repository (scripts/, benchmarks/, notebooks/), imported as a module by path."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def names_file() -> Path | None:
    base = os.environ.get("MAKEMORE_DATA_DIR")
    path = Path(base) / "names.txt" if base else None
    return path if path is not None and path.is_file() else None


@pytest.fixture(scope="session")
def names_path() -> Path:
    path = names_file()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must set MAKEMORE_DATA_DIR to a folder holding names.txt")
        pytest.skip("names.txt not found: set MAKEMORE_DATA_DIR")
    assert _sha256(path) == NAMES_SHA256
    return path


def make_words(n: int = 300, seed: int = 0) -> list[str]:
    """Name-like words with some structure (a few syllables) so a model can learn something."""
    rng = random.Random(seed)
    syllables = ["an", "el", "ma", "ri", "so", "ka", "li", "on", "ta", "ne", "ja", "ro"]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n)]


@pytest.fixture
def words_file(tmp_path) -> Path:
    path = tmp_path / "words.txt"
    path.write_text("\n".join(make_words()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (the page tests of serve and export); skips, saying
    what to install, where either is missing."""
    from test_serve_browser import CHROMIUM_ARGS, chromium_path, missing

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        missing("no chromium found (bash scripts/chromium.sh ensure-installed)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module of tiny models: their products are small, so a second
    thread only adds waiting, and on a busy 2-core machine a thread waiting for a busy core made
    steps and sampling 5-50x slower (the `sample` command defaults to --threads 1 for this)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
