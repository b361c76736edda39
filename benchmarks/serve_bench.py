"""Load on `makemore serve` (issues 10 and 28's target): 400 POST /api/sample requests (n=20)
from 40 concurrent clients against a lecture-size run; every one must succeed with p95 <= 250 ms
and the server must stay under 1 GiB. Three loads: requests without a seed (as the page sends
them), each with its own seed, and each with its own seed and conditions (names of 5 to 8
letters ending in "a"). Meanwhile another client asks GET /api/runs now and then, to show that
sampling does not hold up other requests.

    .venv/bin/python benchmarks/serve_bench.py [--quick] [--run RUN] [--repeats K] [--modes seeded,...]

`bench_serve(corpus, quick)` is the item for benchmarks/bench.py. The server runs as its own
process (`python -m makemore serve RUN --port 0`), so its peak RSS (VmHWM) is its own; the
clients are threads of this process, on the same machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REQUESTS, CLIENTS, N = 400, 40, 20
P95_TARGET_MS, RSS_TARGET_MB = 250.0, 1024.0
MODES = ("unseeded", "seeded", "conditioned")
CONDITIONS = {"min_len": 5, "max_len": 8, "suffix": "a"}  # the conditioned load's, on top of its seeds


def train_lecture_run(corpus, out: Path, steps: int) -> Path:
    """The lecture's model (11,897 parameters on names); the number of steps does not change
    the cost of sampling, only the quality of the names."""
    import makemore as mm

    model_cfg, train_cfg = mm.make_configs("lecture", vocab_size=corpus.vocab.size, steps=steps)
    mm.train(corpus, model_cfg, train_cfg, out=out, progress=False)
    return out


def start_server(run: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "makemore", "serve", str(run), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line}{proc.stderr.read()}")
    return proc, line[line.index("http://"):].split()[0]


def post(url: str, body: dict, timeout: float = 30.0) -> tuple[int, float]:
    """(HTTP status, seconds); status 0 for a failure without a response."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            payload = json.loads(r.read())
            ok = r.status == 200 and len(payload["samples"]) == body["n"]
            return (r.status if ok else 0), time.perf_counter() - t0
    except Exception:  # any failure counts as one, with its time
        return 0, time.perf_counter() - t0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(url: str, requests: int = REQUESTS, clients: int = CLIENTS, mode: str = "unseeded") -> dict:
    """`requests` sample requests spread over `clients` threads, each sending its share in turn,
    while one more thread asks GET /api/runs every 50 ms. `mode`: "unseeded" (as the page sends
    them), "seeded" (each its own seed) or "conditioned" (each its own seed, and CONDITIONS).
    The server draws requests with the same settings together, a seeded one from its seed's
    stream."""
    seeded = mode != "unseeded"
    extra = CONDITIONS if mode == "conditioned" else {}
    done = threading.Event()
    side: list[float] = []

    def side_client():
        while not done.is_set():
            t0 = time.perf_counter()
            with urllib.request.urlopen(url + "api/runs", timeout=30) as r:
                r.read()
            side.append(time.perf_counter() - t0)
            time.sleep(0.05)

    def client(k: int) -> list[tuple[int, float]]:
        share = requests // clients + (k < requests % clients)
        return [post(url + "api/sample", {"n": N, **({"seed": k * 1000 + i} if seeded else {}), **extra})
                for i in range(share)]

    watcher = threading.Thread(target=side_client, daemon=True)
    t0 = time.perf_counter()
    watcher.start()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - t0
    done.set()
    watcher.join()
    ms = sorted(1000 * s for _, s in results)
    return {
        "requests": len(results), "clients": clients, "n": N, "seeded": seeded, "mode": mode,
        "failures": sum(status != 200 for status, _ in results),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
        "max_ms": round(ms[-1], 1),
        "wall_s": round(wall, 2), "requests_per_s": round(len(results) / wall, 1),
        "side_gets": len(side), "side_get_max_ms": round(1000 * max(side), 1) if side else None,
        "side_get_p50_ms": round(1000 * statistics.median(side), 1) if side else None,
    }


def bench_serve(corpus, quick: bool, run: Path | None = None, repeats: int | None = None,
                modes: tuple[str, ...] = MODES) -> dict:
    """The item for bench.py: a fresh lecture-size run (unless `run`), one server, a warm-up,
    then each load of `modes` `repeats` times (3; 1 with quick); for each, the figures of the
    round with the median p95. `ok`: the target met by every load; the peak RSS is over all
    rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        if run is None:
            run = train_lecture_run(corpus, Path(tmp) / "lecture", steps=1000 if quick else 5000)
        proc, url = start_server(run)
        try:
            for _ in range(5):
                post(url + "api/sample", {"n": N})
            result = {}
            for mode in modes:
                rounds = [load(url, mode=mode) for _ in range(repeats or (1 if quick else 3))]
                median = sorted(rounds, key=lambda r: r["p95_ms"])[len(rounds) // 2]
                result[mode] = {**median, "p95_all_ms": [r["p95_ms"] for r in rounds]}
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    met = all(r["failures"] == 0 and r["p95_ms"] <= P95_TARGET_MS for r in result.values())
    return {**result, "peak_rss_mb": round(rss, 1), "p95_target_ms": P95_TARGET_MS, "rss_target_mb": RSS_TARGET_MB,
            "load_avg_1m": round(os.getloadavg()[0], 2), "ok": met and rss < RSS_TARGET_MB}


def main() -> None:
    import argparse

    import makemore as mm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 training steps and one round of load")
    parser.add_argument("--run", type=Path, help="serve this run instead of training one")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--modes", default=",".join(MODES), help=f"loads to run, of {', '.join(MODES)}")
    args = parser.parse_args()
    modes = tuple(m for m in args.modes.split(",") if m)
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes takes some of {', '.join(MODES)}")
    corpus = None if args.run else mm.load_corpus("names")
    result = bench_serve(corpus, args.quick, args.run, args.repeats, modes)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
