"""scripts/make_big_list.py, the benchmark's big multilingual list: the same bytes for the same
seed, counts that match the file as makemore reads it, and every Faker item in a full-size list;
and the runner with which benchmarks/bench.py times and measures each command of the big item."""

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("faker")
from conftest import load_file  # noqa: E402
from makemore.data import read_words  # noqa: E402



@pytest.fixture(scope="module")
def big():
    return load_file("scripts/make_big_list.py")


def make(big, path: Path, lines: int, seed: int) -> tuple[bytes, dict]:
    big.main(["--out", str(path), "--lines", str(lines), "--seed", str(seed), "--quiet"])
    return path.read_bytes(), json.loads(path.with_name(path.name + ".json").read_text())


def test_same_seed_same_bytes_and_counts_match_the_file(big, tmp_path):
    a, sidecar = make(big, tmp_path / "a.txt", 3000, seed=3)
    b, _ = make(big, tmp_path / "b.txt", 3000, seed=3)
    c, _ = make(big, tmp_path / "c.txt", 3000, seed=4)
    assert a == b and a != c
    words = read_words(tmp_path / "a.txt")  # as `makemore --data` reads it: nothing dropped or stripped
    assert words == a.decode("utf-8").split("\n")[:-1]
    chars = Counter("".join(words))
    assert sidecar["lines"] == len(words) == 3000
    assert sidecar["distinct_lines"] == len(set(words))
    assert sidecar["distinct_characters"] == len(chars)
    assert sidecar["characters"] == sum(chars.values())
    assert sidecar["sha256"] == hashlib.sha256(a).hexdigest()
    assert sum(s["distinct"] for s in sidecar["by_script"].values()) == len(chars)
    assert sidecar["faker"] == __import__("faker").VERSION


def test_a_full_list_holds_every_faker_item_and_thousands_of_characters(big, tmp_path):
    lists = big.faker_lists()
    every = {item for items, _ in lists.values() for item in items}
    # a few items of Faker's lists, looked up independently of faker_lists()
    from faker.providers.person.ko_KR import Provider as Korean
    from faker.providers.person.zh_CN import Provider as Chinese
    from faker.providers.person.ru_RU import Provider as Russian
    expected = {*Korean.last_names, *Chinese.last_names, *Russian.first_names}
    assert expected <= every
    n = 2 * sum(len(items) for items, _ in lists.values())
    data, sidecar = make(big, tmp_path / "big.txt", n, seed=0)
    words = set(data.decode("utf-8").split("\n"))
    assert every <= words
    assert sidecar["distinct_characters"] >= 3000
    assert {"LATIN", "CYRILLIC", "GREEK", "ARABIC", "HEBREW", "DEVANAGARI", "THAI", "CJK", "HANGUL"} \
        <= set(sidecar["by_script"])


# ----------------------------------------------------------------------------------------
# big_bench.py's runner of one command: what it reports of a child that fails, hangs or grows


@pytest.fixture(scope="module")
def bench():
    return load_file("benchmarks/big_bench.py")


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_runner_reports_peak_memory_and_output(bench):
    # 300 MiB touched page by page: the peak must be at least that, and not wildly more
    r = bench.run_child(python("b = b'x' * (300 << 20); print('done')"), timeout=60, max_rss_mib=4096)
    assert r["status"] == "ok" and r["stdout_last_line"] == "done"
    assert 300 <= r["peak_mib"] < 600


def test_runner_reports_failure_timeout_and_memory_cap(bench):
    r = bench.run_child(python("import sys; print('first', file=sys.stderr); sys.exit('the reason')"), 60, 4096)
    assert r["status"] == "failed (exit 1): the reason"
    r = bench.run_child(python("import time; time.sleep(60)"), timeout=0.5, max_rss_mib=4096)
    assert r["status"].startswith("timed out") and r["seconds"] < 30
    r = bench.run_child(python("import time; b = b'x' * (300 << 20); time.sleep(60)"), timeout=60, max_rss_mib=100)
    assert r["status"].startswith("killed past 100 MiB") and r["seconds"] < 30


def test_runner_stops_after_lines(bench):
    r = bench.run_child(python("import itertools\nfor i in itertools.count(): print(i)"), timeout=60,
                        max_rss_mib=4096, stop_after_lines=10_000)
    assert r["status"] == "ok" and 0 < r["seconds_to_lines"] <= r["seconds"] < 30
    r = bench.run_child(python("print('only'); print('two')"), 60, 4096, stop_after_lines=10_000)
    assert r["status"].startswith("failed: exit 0 before 10,000 lines")
