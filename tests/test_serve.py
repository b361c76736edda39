"""`makemore serve`'s JSON API against a real server on a free port: what it answers, checked
against the package's own functions and the run's files; every bad request a 4xx with
{"error"}; nothing outside the runs and the package's static files readable; sampling that
does not hold up other requests. The page itself is tested in a browser
(test_serve_browser.py)."""

from __future__ import annotations

import http.client
import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch

from makemore import serve
from makemore.cli import main
from makemore.serve import app as serve_app  # where App looks up draw_batch and score_words

TRAIN = ["--block-size", "3", "--emb-dim", "8", "--hidden", "32", "--batch-size", "32",
         "--steps", "300", "--preset", "lecture", "--lr", "0.1", "--quiet"]


def make_serve_runs(base: Path) -> dict[str, Path]:
    """A tiny run and a 2-seed ensemble on generated words, trained once per test session
    (the browser tests reuse them)."""
    from conftest import make_words

    base = base / "serve-runs"
    runs = {"run": base / "tiny", "ensemble": base / "ens"}
    if all((p / ("summary.json" if k == "run" else "ensemble.json")).is_file() for k, p in runs.items()):
        return runs
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    data = base / "words.txt"
    data.write_text("\n".join(make_words()) + "\n")
    assert main(["train", "--data", str(data), "--out", str(runs["run"]), *TRAIN]) == 0
    assert main(["train", "--data", str(data), "--out", str(runs["ensemble"]), "--seeds", "2", *TRAIN]) == 0
    return runs


LABELLED_TRAIN = ["--block-size", "3", "--emb-dim", "8", "--hidden", "32", "--batch-size", "32",
                  "--steps", "1000", "--preset", "lecture", "--lr", "1.0", "--quiet"]
ALPHABETS = {"A": "abcde", "B": "vwxyz"}  # two labels that share no letter


def make_labelled_run(base: Path) -> Path:
    """A tiny run trained with --labels on 200 generated lines LABEL<TAB>ITEM, each label's
    items of its own alphabet (ALPHABETS); trained once per test session."""
    import random

    out = base / "serve-labelled" / "run"
    if (out / "summary.json").is_file():
        return out
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    rng = random.Random(0)
    lines = []
    for i in range(200):
        label = "AB"[i % 2]
        lines.append(f"{label}\t" + "".join(rng.choice(ALPHABETS[label]) for _ in range(rng.randint(2, 6))))
    data = out.parent / "labelled.tsv"
    data.write_text("\n".join(lines) + "\n")
    assert main(["train", "--data", str(data), "--labels", "--out", str(out), *LABELLED_TRAIN]) == 0
    return out


class Client:
    """A few requests to a server at host:port, raw enough to send paths as written."""

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            if isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            raw = r.read()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), raw
        finally:
            conn.close()

    def get(self, path: str):
        status, _, raw = self.request("GET", path)
        return status, json.loads(raw)

    def post(self, path: str, obj=None, raw: bytes | str | None = None, content_type: str = "application/json"):
        body = raw if raw is not None else json.dumps(obj)
        status, _, data = self.request("POST", path, body, {"Content-Type": content_type})
        return status, json.loads(data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return make_serve_runs(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(runs):
    app = serve.create_app([runs["run"], runs["ensemble"]])
    srv = serve.Server(app, serve.bind("127.0.0.1", 0)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url)


# ------------------------------------------------------------------------------------------
# what the API answers


def test_runs_lists_both_with_their_files_figures(client, runs):
    from makemore.models import count_params
    from makemore.runs import load_run

    status, data = client.get("/api/runs")
    assert status == 200
    by_id = {r["id"]: r for r in data["runs"]}
    assert list(by_id) == ["tiny", "ens"]
    tiny, ens = by_id["tiny"], by_id["ens"]
    run = load_run(runs["run"])
    assert tiny["params"] == count_params(run.model_cfg) == run.model.num_params()
    assert tiny["dev_loss"] == json.loads((runs["run"] / "summary.json").read_text())["dev_loss"]
    assert tiny["config"]["model"]["emb_dim"] == 8 and tiny["kind"] == "run" and tiny["training"] is False
    assert ens["kind"] == "ensemble of 2" and ens["params"] == 2 * tiny["params"]
    assert ens["dev_loss"] == json.loads((runs["ensemble"] / "ensemble.json").read_text())["dev_loss"]
    assert data["limits"]["n_max"] == serve.LIMITS["n_max"] and data["limits"]["word_max"] == serve.LIMITS["word_max"]


def test_sample_is_the_packages_sample_with_true_tags(client, runs):
    from makemore.runs import load_run
    from makemore.predict import model_predictor as mlp_predictor
    from makemore.sampling import sample_tagged

    status, data = client.post("/api/sample", {"n": 30, "seed": 7})
    assert status == 200 and data["run"] == "tiny" and data["seed"] == 7
    run = load_run(runs["run"])
    expected = sample_tagged(mlp_predictor(run.model), run.vocab, run.splits, 30, seed=7, max_len=serve.SAMPLE_MAX_LEN)
    assert data["samples"] == expected  # same seed: the very names `makemore sample --seed 7` prints
    splits = json.loads((runs["run"] / "words.json").read_text())
    for s in data["samples"]:  # each tag checked against words.json, not against tag_words
        want = next((k for k in ("train", "dev", "test") if s["text"] in splits[k]), "new")
        assert s["tag"] == want


def test_sample_options(client):
    status, data = client.post("/api/sample", {"n": 15, "prefix": "ma", "temperature": 0.7, "top_k": 3, "seed": 1})
    assert status == 200 and len(data["samples"]) == 15
    assert all(s["text"].startswith("ma") for s in data["samples"])
    status, data = client.post("/api/sample", {"n": 10, "new_only": True, "run": "ens"})
    assert status == 200 and data["run"] == "ens" and data["seed"] is None
    assert data["samples"] and all(s["tag"] == "new" for s in data["samples"])
    # top_k=1 and a low temperature: every draw is the single most likely name
    status, data = client.post("/api/sample", {"n": 5, "top_k": 1})
    assert status == 200 and len({s["text"] for s in data["samples"]}) == 1


def test_sample_conditions_are_the_packages(client, runs):
    """suffix, contains, min_len, max_len and exclude: every sample meets them all, and the
    samples are those of the package's sample_tagged with the same seed and Constraints."""
    from makemore.predict import model_predictor as mlp_predictor
    from makemore.runs import load_run
    from makemore.conditions import Constraints
    from makemore.sampling import sample_tagged

    run = load_run(runs["run"])
    predictor = mlp_predictor(run.model)
    plain = sample_tagged(predictor, run.vocab, run.splits, 300, seed=3, max_len=serve.SAMPLE_MAX_LEN)
    exclude = list(dict.fromkeys(s["text"] for s in plain if s["text"].endswith("a")))[:5]  # words it would draw
    assert len(exclude) == 5
    body = {"n": 25, "seed": 3, "suffix": "a", "contains": "n", "min_len": 4, "max_len": 7, "exclude": exclude}
    status, data = client.post("/api/sample", body)
    assert status == 200 and data["seed"] == 3 and len(data["samples"]) == 25
    for s in data["samples"]:
        t = s["text"]
        assert t.endswith("a") and "n" in t and 4 <= len(t) <= 7 and t not in exclude, t
    conditions = Constraints(suffix="a", contains="n", min_len=4, max_len=7, exclude=exclude)
    assert data["samples"] == sample_tagged(predictor, run.vocab, run.splits, 25, seed=3, constraints=conditions,
                                            max_len=serve.SAMPLE_MAX_LEN)
    status, data = client.post("/api/sample", {"n": 10, "prefix": "ma", "min_len": 6, "new_only": True, "run": "ens"})
    assert status == 200 and len(data["samples"]) == 10
    assert all(s["text"].startswith("ma") and len(s["text"]) >= 6 and s["tag"] == "new" for s in data["samples"])


def test_hopeless_conditions_are_a_400_with_the_share_met(client):
    status, data = client.post("/api/sample", {"n": 5, "suffix": "jjjjjjj"})
    assert_error(status, data, expected=400)
    assert "met the conditions (ending in 'jjjjjjj')" in data["error"] and "%" in data["error"]


def test_score_with_alternatives_against_the_model_itself(client, runs):
    from makemore.runs import load_run

    status, data = client.post("/api/score", {"words": ["mana", "ka"], "top": 4})
    assert status == 200
    run = load_run(runs["run"])
    for result, word in zip(data["scores"], ["mana", "ka"]):
        # reference: the model's own forward pass (not the fast tables sampling uses), softmaxed
        ids = [0] * 3 + run.vocab.encode(word)
        X = torch.tensor([ids[i:i + 3] for i in range(len(word) + 1)])
        with torch.no_grad():
            probs = torch.softmax(run.model(X)[0].double(), dim=1)
        targets = run.vocab.encode(word) + [0]
        p = probs[torch.arange(len(targets)), targets]
        assert [c["char"] for c in result["chars"]] == list(word) + ["<end>"]
        assert [c["prob"] for c in result["chars"]] == pytest.approx(p.tolist(), rel=1e-4)
        assert result["nll"] == pytest.approx(-p.log().sum().item(), rel=1e-4)
        assert result["nll_per_char"] == pytest.approx(result["nll"] / (len(word) + 1))
        assert result["perplexity"] == pytest.approx(math.exp(result["nll_per_char"]))
        for row, c in zip(probs, result["chars"]):
            top = torch.topk(row, 4)
            names = [run.vocab.chars[i] if i else "<end>" for i in top.indices.tolist()]
            assert [t["char"] for t in c["top"]] == names
            assert [t["prob"] for t in c["top"]] == pytest.approx(top.values.tolist(), rel=1e-4)


def test_embeddings_are_C_by_pca_with_true_neighbours(client, runs):
    from makemore.runs import load_run

    status, data = client.get("/api/embeddings?run=tiny")
    assert status == 200
    run = load_run(runs["run"])
    C = run.model.C.detach().double().numpy()
    assert data["chars"] == list(run.vocab.chars) and data["emb_dim"] == 8
    xy = np.array(data["points"])
    # PCA reference: the top two eigenvectors of the covariance (up to sign)
    centred = C - C.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    for k, v in enumerate([vecs[:, -1], vecs[:, -2]]):
        proj = centred @ v
        assert np.allclose(np.abs(xy[:, k]), np.abs(proj), atol=1e-6)
    dist = np.linalg.norm(C[:, None] - C[None], axis=-1)
    for i, nn in enumerate(data["neighbours"]):
        order = [j for j in np.argsort(dist[i], kind="stable") if j != i][:serve.NEIGHBOURS]
        assert [n["char"] for n in nn] == [run.vocab.chars[j] for j in order]


def test_metrics_are_the_csv(client, runs):
    import csv

    status, data = client.get("/api/metrics?run=tiny")
    assert status == 200 and data["training"] is False
    [curve] = data["curves"]
    with open(runs["run"] / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert curve["step"] == [float(r["step"]) for r in rows]
    assert curve["dev_loss"] == [float(r["dev_loss"]) if r["dev_loss"] else None for r in rows]
    status, data = client.get("/api/metrics?run=ens")
    assert [c["label"] for c in data["curves"]] == json.loads((runs["ensemble"] / "ensemble.json").read_text())["members"]


def test_metrics_follow_a_run_that_is_still_training(runs, tmp_path):
    from makemore.rundir import RunLock

    live = tmp_path / "live"
    shutil.copytree(runs["run"], live)
    (live / "summary.json").unlink()  # written only when training ends
    training = RunLock(live).acquire()  # what a training process holds until its last step
    app = serve.create_app([live])
    srv = serve.Server(app, serve.bind("127.0.0.1", 0)).start()
    try:
        c = Client(srv.url)
        _, before = c.get("/api/metrics")
        assert before["training"] is True
        last = before["curves"][0]["step"][-1]
        with open(live / "metrics.csv", "a") as f:
            f.write(f"{int(last) + 1},1.5,,0.01,9.0\n{int(last) + 2},1.4")  # the second row half-written
        _, after = c.get("/api/metrics")
        assert after["curves"][0]["step"][-2:] == [last, last + 1]  # the new row; the cut one skipped
        _, listed = c.get("/api/runs")
        assert listed["runs"][0]["training"] is True and listed["runs"][0]["dev_loss"] is None
        # a run killed before its end lets go of its lock: not live, though it has no summary.json
        training.release()
        _, stopped = c.get("/api/metrics")
        assert stopped["training"] is False
        _, listed = c.get("/api/runs")
        assert listed["runs"][0]["training"] is False
    finally:
        training.release()
        srv.stop()


# ------------------------------------------------------------------------------------------
# bad requests: every one a 4xx with {"error": "..."}


BAD_SAMPLES = [
    {"n": 0}, {"n": serve.LIMITS["n_max"] + 1}, {"n": -3}, {"n": "5"}, {"n": True}, {"n": 2.5}, {"n": None},
    {"temperature": 0}, {"temperature": -1}, {"temperature": "hot"}, {"temperature": 1e9},
    {"top_k": 0}, {"top_k": 1.5}, {"top_k": 10_000},
    {"prefix": "ma!"}, {"prefix": "A"}, {"prefix": "."}, {"prefix": "a" * (serve.LIMITS["word_max"] + 1)},
    {"prefix": 3}, {"seed": -1}, {"seed": "x"}, {"seed": 2**64}, {"new_only": "yes"},
    {"run": "nope"}, {"run": "../tiny"}, {"run": 3},
    {"suffix": "A"}, {"suffix": "."}, {"suffix": 3}, {"contains": "a!"}, {"contains": ["a"]},
    {"suffix": "a" * (serve.LIMITS["word_max"] + 1)}, {"min_len": -1}, {"min_len": 1.5}, {"max_len": "8"},
    {"max_len": -2}, {"min_len": 6, "max_len": 5}, {"prefix": "mana", "max_len": 3}, {"suffix": "mana", "max_len": 3},
    {"min_len": serve.LIMITS["word_max"] + serve.SAMPLE_MAX_LEN + 1}, {"prefix": "ma", "min_len": 2 + serve.SAMPLE_MAX_LEN + 1},
    {"exclude": "mana"}, {"exclude": [1]}, {"exclude": ["ma"] * (serve.LIMITS["exclude_max"] + 1)},
    {"temprature": 50}, {"words": ["mana"]},
]
BAD_SCORES = [
    {}, {"words": "mana"}, {"words": []}, {"words": [""]}, {"words": [3]}, {"words": ["mana", None]},
    {"words": ["MANA"]}, {"words": ["ma na"]}, {"words": ["ma.na"]}, {"words": ["a" * (serve.LIMITS["word_max"] + 1)]},
    {"words": ["ma"] * (serve.LIMITS["words_max"] + 1)}, {"words": ["mana"], "top": 11}, {"words": ["mana"], "top": -1},
    {"words": ["mana"], "run": "nope"}, {"words": ["mana"], "n": 5},
]


def assert_error(status: int, data, expected: int | None = None):
    assert 400 <= status < 500, (status, data)
    assert expected is None or status == expected, (status, data)
    assert isinstance(data, dict) and set(data) == {"error"} and isinstance(data["error"], str) and data["error"]
    assert "Traceback" not in data["error"]


@pytest.mark.parametrize("body", BAD_SAMPLES, ids=json.dumps)
def test_bad_sample_requests(client, body):
    assert_error(*client.post("/api/sample", {"n": 5, **body}))


@pytest.mark.parametrize("body", BAD_SCORES, ids=json.dumps)
def test_bad_score_requests(client, body):
    assert_error(*client.post("/api/score", body))


def test_a_misspelt_field_is_named_with_the_nearest(client):
    status, data = client.post("/api/sample", {"n": 5, "temprature": 50})
    assert status == 400 and "unknown field \"temprature\" (did you mean 'temperature'?)" in data["error"]


@pytest.mark.parametrize("raw", ["", "not json", "{\"n\": 5", "[1, 2]", "\"n\"", "{\"n\": NaN}",
                                 "{\"n\": Infinity}", b"\xff\xfe{}"], ids=repr)
def test_bodies_that_are_not_a_json_object(client, raw):
    for path in ("/api/sample", "/api/score"):
        assert_error(*client.post(path, raw=raw), expected=400)


def test_wrong_content_type_and_oversized_body(client):
    assert_error(*client.post("/api/sample", raw='{"n": 5}', content_type="text/plain"), expected=415)
    big = json.dumps({"words": ["a" * 1000] * 100})
    assert len(big) > serve.LIMITS["body_max"]
    assert_error(*client.post("/api/score", raw=big), expected=413)


def test_unknown_runs_routes_and_methods(client):
    assert_error(*client.get("/api/embeddings?run=nope"), expected=404)
    assert_error(*client.get("/api/metrics?run=..%2F..%2Fetc"), expected=404)
    assert_error(*client.get("/api/nothing"), expected=404)
    status, _, raw = client.request("GET", "/api/sample")
    assert_error(status, json.loads(raw), expected=405)
    status, _, raw = client.request("DELETE", "/api/runs")
    assert_error(status, json.loads(raw), expected=405)


TRAVERSALS = [
    "/static/../serve/app.py", "/static/..%2fserve/app.py", "/static/..%2Fserve/app.py", "/static/%2e%2e/serve/app.py",
    "/static/%2e%2e%2fserve/app.py", "/static/..%5cserve/app.py", "/static/....//serve/app.py", "/static//etc/passwd",
    "/static/%2fetc%2fpasswd", "/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/../../etc/passwd",
    "/static/%252e%252e/serve/app.py", "/static/.%2e/cli.py", "/static/..;/serve/app.py", "/static/%00",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_file_outside_the_static_folder(client, path):
    status, _, raw = client.request("GET", path)
    assert 400 <= status < 500, (path, status)
    assert b"def " not in raw and b"root:" not in raw
    assert "error" in json.loads(raw)


def test_static_files_and_headers(client):
    for name in ("app.js", "charts.js", "style.css", "index.html"):
        status, headers, raw = client.request("GET", f"/static/{name}")
        assert status == 200 and raw == (serve.STATIC / name).read_bytes()
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    status, headers, raw = client.request("GET", "/")
    assert status == 200 and raw == (serve.STATIC / "index.html").read_bytes()
    html = raw.decode()
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere


def test_a_foreign_host_header_is_refused(client):
    status, _, raw = client.request("GET", "/api/runs", headers={"Host": "attacker.example:8000"})
    assert_error(status, json.loads(raw), expected=421)
    assert client.request("GET", "/api/runs", headers={"Host": "localhost:1234"})[0] == 200
    assert serve.allowed_hosts_for("0.0.0.0") is None  # exposed on purpose: any name


# ------------------------------------------------------------------------------------------
# concurrency


def test_sampling_does_not_block_other_requests(server, client, monkeypatch):
    """With every model thread held by a sampling request that cannot finish, the page, its
    static files and the read-only API still answer; then the held requests complete."""
    release, started = threading.Event(), threading.Semaphore(0)
    real = serve.draw_batch

    def held(*args, **kwargs):
        started.release()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(serve_app, "draw_batch", held)
    results = []
    # different settings (temperatures): requests that are never merged into one draw
    workers = [threading.Thread(target=lambda s=s: results.append(
        client.post("/api/sample", {"n": 3, "seed": s, "temperature": 1 + s / 10})))
        for s in range(serve.MODEL_THREADS + 1)]
    try:
        for w in workers:
            w.start()
        for _ in range(serve.MODEL_THREADS):
            assert started.acquire(timeout=30)  # every model thread is now busy
        assert client.get("/api/runs")[0] == 200
        assert client.request("GET", "/static/app.js")[0] == 200
        assert client.request("GET", "/")[0] == 200
        assert client.get("/api/metrics?run=tiny")[0] == 200
        assert client.get("/api/embeddings?run=ens")[0] == 200
    finally:
        release.set()
        for w in workers:
            w.join(30)
    assert [status for status, _ in results] == [200] * len(workers)


def test_requests_waiting_together_are_drawn_as_one_batch(server, client, monkeypatch):
    """Requests with the same settings that wait for a model thread are one draw, seeded or
    not; the seeded one still gets its seed's names (the same as alone)."""
    calls, release, started = [], threading.Event(), threading.Semaphore(0)
    real = serve.draw_batch

    def recorded(model, jobs, *args, **kwargs):
        calls.append(list(jobs))
        started.release()
        assert release.wait(30)
        return real(model, jobs, *args, **kwargs)

    alone = client.post("/api/sample", {"n": 2, "prefix": "ma", "seed": 5})
    monkeypatch.setattr(serve_app, "draw_batch", recorded)
    results: dict[int, tuple] = {}

    def ask(i: int, body: dict):
        results[i] = client.post("/api/sample", body)

    # seeded requests of other settings (one temperature each) take both model threads...
    first = [threading.Thread(target=ask, args=(i, {"n": 2, "seed": i, "temperature": 0.5 + i}))
             for i in range(serve.MODEL_THREADS)]
    for t in first:
        t.start()
    for _ in first:
        assert started.acquire(timeout=30)
    # ...then requests with one setting queue behind them: four without a seed, one with
    queued = [threading.Thread(target=ask, args=(10 + i, {"n": 3 + i, "prefix": "ma"})) for i in range(4)]
    queued.append(threading.Thread(target=ask, args=(20, {"n": 2, "prefix": "ma", "seed": 5})))
    for t in queued:
        t.start()
    # wait until the server holds all of them (its batcher queue has the five)
    deadline = __import__("time").monotonic() + 30
    while sum(len(q) for q in server_queues(server)) < 5:
        assert __import__("time").monotonic() < deadline
        threading.Event().wait(0.01)
    release.set()
    for t in first + queued:
        t.join(30)
    assert all(results[i][0] == 200 for i in results)
    for i in range(4):
        samples = results[10 + i][1]["samples"]
        assert len(samples) == 3 + i and all(s["text"].startswith("ma") for s in samples)
    assert results[20] == alone  # seed 5, drawn with four others: its names as alone
    assert sorted(len(jobs) for jobs in calls) == [1] * serve.MODEL_THREADS + [5]  # one draw for the five
    merged = next(jobs for jobs in calls if len(jobs) == 5)
    assert sorted(n for n, _ in merged) == [2, 3, 4, 5, 6] and (2, 5) in merged
    assert len({seed for _, seed in merged}) == 5  # each unseeded request its own random seed


def test_seeded_load_every_answer_is_its_seeds(client):
    """100 seeded requests from 20 clients at once, with and without conditions: none is lost,
    and each answer is the one the same request gets alone (merged requests share the forward
    passes, never their random numbers). Speed is measured in benchmarks/serve_bench.py."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = [{"n": 20, "seed": 1000 + i, **({"min_len": 4, "max_len": 8, "suffix": "a"} if i % 3 == 0 else {})}
              for i in range(100)]
    with ThreadPoolExecutor(20) as pool:
        together = list(pool.map(lambda b: client.post("/api/sample", b), bodies))
    alone = [client.post("/api/sample", b) for b in bodies]
    assert [status for status, _ in together] == [200] * len(bodies)
    assert all(len(data["samples"]) == 20 for _, data in together)
    assert together == alone


def server_queues(server) -> list:
    return list(server.app.batcher.queues.values())


@pytest.mark.parametrize("cap, expected", [(5, [3, 3, 3]), (6, [6, 3]), (100, [9])])
def test_batcher_cap_and_order(cap, expected):
    import anyio

    draws, got = [], {}

    async def run_sync(fn, *args):
        return fn(*args)

    def draw(jobs):
        draws.append(sum(n for _, n in jobs))
        return [[{"text": f"{name}-{i}", "tag": "new"} for i in range(n)] for name, n in jobs]

    async def main():
        gate = anyio.CapacityLimiter(1)
        batcher = serve.SampleBatcher(gate, run_sync, cap)
        await gate.acquire()  # the model thread is busy: requests queue

        async def ask(name):
            got[name] = await batcher.draw(("k",), (name, 3), 3, draw)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for name in "ABC":
                    tg.start_soon(ask, name)
                await anyio.wait_all_tasks_blocked()
                gate.release()
        assert batcher.queues == {}

    anyio.run(main)
    assert draws == expected
    assert got == {name: [{"text": f"{name}-{i}", "tag": "new"} for i in range(3)] for name in "ABC"}  # each its own


def test_batcher_fails_one_request_alone():
    """A result that is an exception fails that request only; the others of its batch get theirs."""
    import anyio

    got = {}

    async def run_sync(fn, *args):
        return fn(*args)

    def draw(jobs):
        return [ValueError(f"no {name}") if name == "B" else [name] for name in jobs]

    async def main():
        gate = anyio.CapacityLimiter(1)
        batcher = serve.SampleBatcher(gate, run_sync, cap=100)
        await gate.acquire()

        async def ask(name):
            try:
                got[name] = await batcher.draw(("k",), name, 1, draw)
            except ValueError as e:
                got[name] = str(e)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for name in "ABC":
                    tg.start_soon(ask, name)
                await anyio.wait_all_tasks_blocked()
                gate.release()

    anyio.run(main)
    assert got == {"A": ["A"], "B": "no B", "C": ["C"]}


def test_batcher_hands_on_the_lead_when_the_leader_is_cancelled():
    import anyio

    draws, got = [], {}

    async def run_sync(fn, *args):
        return fn(*args)

    def draw(jobs):
        draws.append(sum(jobs))
        return [[{"text": str(i), "tag": "new"} for i in range(n)] for n in jobs]

    async def main():
        gate = anyio.CapacityLimiter(1)
        batcher = serve.SampleBatcher(gate, run_sync, cap=100)
        await gate.acquire()

        async def ask(name, n):
            got[name] = await batcher.draw(("k",), n, n, draw)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                async with anyio.create_task_group() as leader:
                    leader.start_soon(ask, "A", 2)
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(ask, "B", 3)
                    tg.start_soon(ask, "C", 4)
                    await anyio.wait_all_tasks_blocked()
                    leader.cancel_scope.cancel()  # A gives up while waiting for the model thread
                gate.release()
        assert batcher.queues == {}

    anyio.run(main)
    assert "A" not in got and draws == [7] and len(got["B"]) == 3 and len(got["C"]) == 4


# ------------------------------------------------------------------------------------------
# the command


def test_cli_errors_are_one_line(runs, capsys, tmp_path):
    for argv in (["serve", str(tmp_path / "missing")], ["serve", str(runs["run"]), "--port", "70000"],
                 ["serve", str(runs["run"]), "--mix"], ["serve", str(runs["run"]), "--host", "no.such.host.invalid"]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("makemore: error:"), err


def test_cli_serves_a_mixture_and_prints_its_url(runs, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(runs["run"], mixed)
    assert main(["mix", str(mixed), "--ngram-context", "2"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "makemore", "serve", str(mixed), "--mix", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + proc.stderr.read()
        c = Client(line[line.index("http://"):].split()[0])
        _, data = c.get("/api/runs")
        assert data["runs"][0]["kind"] == "run + n-gram mixture"
        assert data["runs"][0]["dev_loss"] == json.loads((mixed / "mix.json").read_text())["mix_dev_loss"]
        status, scored = c.post("/api/score", {"words": ["mana"]})
        assert status == 200
        from makemore.mixture import run_predictor
        from makemore.runs import load_any
        from makemore.sampling import score

        run = load_any(str(mixed))
        assert scored["scores"][0]["nll"] == pytest.approx(score(run_predictor(run, "mixture"), run.vocab, ["mana"])[0]["nll"])
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the way to stop it, so a clean exit
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in err and err.strip().endswith("makemore serve: stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_an_unexpected_failure_is_a_json_500_without_traceback(client, monkeypatch, capfd):
    def broken(*args, **kwargs):
        raise RuntimeError("something the API did not foresee")

    monkeypatch.setattr(serve_app, "score_words", broken)
    status, headers, raw = client.request("POST", "/api/score", json.dumps({"words": ["mana"]}),
                                          {"Content-Type": "application/json"})
    assert status == 500 and json.loads(raw) == {"error": "internal error (the server's log has the details)"}
    assert b"Traceback" not in raw and b"foresee" not in raw


# ------------------------------------------------------------------------------------------
# a labelled run (train --labels): samples by label, the label posterior of a word


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, runs) -> Client:
    """A server of the labelled run and, second, the plain tiny run."""
    run = make_labelled_run(tmp_path_factory.getbasetemp())
    srv = serve.Server(serve.create_app([run, runs["run"]]), serve.bind("127.0.0.1", 0)).start()
    c = Client(srv.url)
    c.run = run
    yield c
    srv.stop()


def labelled_parts(path: Path):
    """The labelled run's predictor (its result, as served), vocabulary and splits."""
    from makemore.mixture import run_predictor
    from makemore.runs import load_any

    run = load_any(path)
    return run_predictor(run, "result"), run.vocab, run.splits


def test_a_labelled_run_lists_its_labels_and_their_shares(labelled):
    from makemore.labels import label_prior

    status, data = labelled.get("/api/runs")
    assert status == 200
    mine, plain = data["runs"]
    _, vocab, splits = labelled_parts(labelled.run)
    assert [x["label"] for x in mine["labels"]] == ["A", "B"] == list(vocab.labels)
    assert [x["share"] for x in mine["labels"]] == pytest.approx(label_prior(vocab, splits["train"]).tolist())
    assert sum(x["share"] for x in mine["labels"]) == pytest.approx(1.0)
    assert "labels" not in plain  # a list of words is listed as before


def test_sample_with_a_label_is_that_labels_items(labelled):
    from makemore.labels import one_label
    from makemore.sampling import sample_tagged

    body = {"n": 200, "seed": 1, "temperature": 0.5, "label": "B"}
    status, data = labelled.post("/api/sample", body)
    assert status == 200 and len(data["samples"]) == 200
    assert all(s["label"] == "B" and set(s["text"]) <= set(ALPHABETS["B"]) for s in data["samples"]), data["samples"]
    p, items_vocab, splits = one_label(*labelled_parts(labelled.run), "B")
    expected = sample_tagged(p, items_vocab, splits, 200, seed=1, temperature=0.5, max_len=serve.SAMPLE_MAX_LEN)
    assert [{"text": s["text"], "tag": s["tag"]} for s in data["samples"]] == expected  # `sample --label B`'s
    status, data = labelled.post("/api/sample", {**body, "label": "A", "prefix": "a", "new_only": True})
    assert status == 200 and len(data["samples"]) == 200
    assert all(s["text"].startswith("a") and s["tag"] == "new" and s["label"] == "A" for s in data["samples"])


def test_sample_without_a_label_draws_labels_by_their_shares(labelled):
    from makemore.labels import sample_labels

    status, data = labelled.post("/api/sample", {"n": 100, "seed": 4, "temperature": 0.5})
    assert status == 200 and len(data["samples"]) == 100
    assert {s["label"] for s in data["samples"]} == {"A", "B"}
    for s in data["samples"]:
        assert set(s) == {"text", "tag", "label"} and set(s["text"]) <= set(ALPHABETS[s["label"]]), s
    chunks = list(sample_labels(*labelled_parts(labelled.run), 100, seed=4, tagged=True, temperature=0.5,
                                max_len=serve.SAMPLE_MAX_LEN))
    lines, tags = [line for c in chunks for line in c[0]], [tag for c in chunks for tag in c[1]]
    # the very lines of `makemore sample --seed 4` (without --label), LABEL<TAB>ITEM
    assert [f"{s['label']}\t{s['text']}" for s in data["samples"]] == lines
    assert [s["tag"] for s in data["samples"]] == tags
    assert labelled.post("/api/sample", {"n": 100, "seed": 4, "temperature": 0.5, "label": ""})[1] == data


def test_a_labelled_exclude_line_leaves_its_item_out_under_its_label_only(labelled):
    """As `makemore sample --exclude` reads a labelled run's lines (labels.label_constraints)."""
    _, data = labelled.post("/api/sample", {"n": 60, "seed": 9})
    a_item = next(s["text"] for s in data["samples"] if s["label"] == "A")
    status, again = labelled.post("/api/sample", {"n": 60, "seed": 9, "exclude": [f"A\t{a_item}", f"B\t{a_item}"]})
    assert status == 200 and a_item not in {s["text"] for s in again["samples"]}
    status, one = labelled.post("/api/sample", {"n": 30, "seed": 9, "label": "A", "exclude": [f"A\t{a_item}"]})
    assert status == 200 and a_item not in {s["text"] for s in one["samples"]}
    status, bad = labelled.post("/api/sample", {"n": 5, "seed": 9, "exclude": ["C\tabc"]})
    assert status == 400 and "label 'C', which the run does not have" in bad["error"]


def test_labelled_requests_together_are_each_their_own(labelled):
    """Seeded requests of both labels and of none, at once: each answer is the one it gets
    alone (requests are drawn together per label and settings, never across labels)."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = [{"n": 15, "seed": 50 + i, **({"label": "AB"[i % 2]} if i % 3 else {}),
               **({"min_len": 3} if i % 4 == 0 else {})} for i in range(30)]
    with ThreadPoolExecutor(10) as pool:
        together = list(pool.map(lambda b: labelled.post("/api/sample", b), bodies))
    alone = [labelled.post("/api/sample", b) for b in bodies]
    assert [status for status, _ in together] == [200] * len(bodies)
    assert together == alone
    for body, (_, data) in zip(bodies, together):
        if "label" in body:
            assert {s["label"] for s in data["samples"]} == {body["label"]}


def test_explaining_a_word_gives_its_label_posterior(labelled):
    from makemore.labels import classify, label_prior, one_label
    from makemore.sampling import score

    predictor, vocab, splits = labelled_parts(labelled.run)
    status, data = labelled.post("/api/score", {"words": ["xyzzy", "abba"], "top": 3})
    assert status == 200
    expected = classify(predictor, vocab, label_prior(vocab, splits["train"]), ["xyzzy", "abba"])
    for result, post, top in zip(data["scores"], expected, ["B", "A"]):
        assert result["labels"][0]["label"] == top and result["label"] == top  # no label: its most probable
        assert [x["label"] for x in result["labels"]] == [x["label"] for x in post["labels"]]
        assert [x["prob"] for x in result["labels"]] == pytest.approx([x["prob"] for x in post["labels"]])
        assert sum(x["prob"] for x in result["labels"]) == pytest.approx(1.0)
        p, items_vocab, _ = one_label(predictor, vocab, splits, top)
        assert result["nll"] == pytest.approx(score(p, items_vocab, [result["word"]])[0]["nll"], rel=1e-6)
        assert len(result["chars"]) == len(result["word"]) + 1 and len(result["chars"][0]["top"]) == 3
    status, under_a = labelled.post("/api/score", {"words": ["xyzzy"], "label": "A"})
    assert status == 200 and under_a["scores"][0]["label"] == "A"
    assert under_a["scores"][0]["nll"] > data["scores"][0]["nll"]  # a B word is unlikely as an A item
    assert under_a["scores"][0]["labels"] == data["scores"][0]["labels"]  # the posterior does not depend on it


@pytest.mark.parametrize("path, body, what", [
    ("/api/sample", {"n": 5, "label": "C"}, "unknown label 'C'; the labels are: A, B"),
    ("/api/score", {"words": ["xyz"], "label": "C"}, "unknown label 'C'; the labels are: A, B"),
    ("/api/sample", {"n": 5, "label": "B\tx" * 1000}, "unknown label"),
    ("/api/sample", {"n": 5, "label": 2}, "label must be a string"),
    ("/api/score", {"words": ["xyz"], "label": ["A"]}, "label must be a string"),
    ("/api/sample", {"n": 5, "label": "A", "run": "tiny"}, "trained without labels"),
    ("/api/score", {"words": ["mana"], "label": "A", "run": "tiny"}, "trained without labels"),
], ids=lambda x: json.dumps(x)[:40] if isinstance(x, dict) else None)
def test_bad_labels_are_a_400_of_one_line(labelled, path, body, what):
    status, data = labelled.post(path, body)
    assert_error(status, data, expected=400)
    assert what in data["error"] and "\n" not in data["error"] and len(data["error"]) < 300


def test_a_corrupted_summary_is_one_line_saying_the_model_is_intact(runs, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["run"], damaged)
    (damaged / "summary.json").write_text("{not json")
    from makemore.errors import UserError

    with pytest.raises(UserError, match="summary.json is corrupted.*best.safetensors"):
        serve.create_app([damaged])  # what `makemore serve` does before it listens
    assert main(["eval", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "summary.json is corrupted" in err and "best.safetensors" in err
