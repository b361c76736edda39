"""`make bench`: every speed figure of the README, each a ratio measured in this one run
against the baseline it names. Prints a table and writes benchmarks/results.json.

    .venv/bin/python benchmarks/bench.py [--quick] [--only step,fast,sample,population,scaling,big,dp,openmp,serve,precision,recurrent,softmax,gpu]

`--only` updates those items in an existing results.json (each item keeps its own date).

`big` (issue 8) is of another kind: not a ratio but the CLI's wall time and peak memory, one
process per command, on a 700,000-line list in 18 scripts (scripts/make_big_list.py, built into
runs/big/ on first use) against the targets of the issue, with names.txt beside it.

The baselines are written out here as the lecture writes them (eager autograd, one name at a
time), so that they are not accidentally sped up by changes to the package.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

import makemore as mm
from makemore.engines import make_engine

HERE = Path(__file__).resolve().parent
TARGET_DEV = 2.17


def machine() -> str:
    from makemore.utils import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


# ----------------------------------------------------------------------------------------
# The lecture's own code (makemore part 2), kept literal as the reference.


class LectureMLP:
    """C, W1, b1, W2, b2 as plain tensors, trained with loss.backward() and p.data -= lr*grad."""

    def __init__(self, vocab_size=27, block_size=3, emb_dim=10, hidden=200, seed=2147483647):
        g = torch.Generator().manual_seed(seed)
        self.block_size, self.emb_dim = block_size, emb_dim
        self.C = torch.randn((vocab_size, emb_dim), generator=g)
        self.W1 = torch.randn((block_size * emb_dim, hidden), generator=g)
        self.b1 = torch.randn(hidden, generator=g)
        self.W2 = torch.randn((hidden, vocab_size), generator=g)
        self.b2 = torch.randn(vocab_size, generator=g)
        self.parameters = [self.C, self.W1, self.b1, self.W2, self.b2]
        for p in self.parameters:
            p.requires_grad = True

    def logits(self, X):
        emb = self.C[X]
        h = torch.tanh(emb.view(-1, self.block_size * self.emb_dim) @ self.W1 + self.b1)
        return h @ self.W2 + self.b2

    def step(self, Xb, Yb, lr):
        loss = F.cross_entropy(self.logits(Xb), Yb)
        for p in self.parameters:
            p.grad = None
        loss.backward()
        for p in self.parameters:
            p.data += -lr * p.grad
        return loss

    @torch.no_grad()
    def loss(self, X, Y):
        return F.cross_entropy(self.logits(X), Y).item()


def timed(fn, repeats: int = 3) -> float:
    """Best of `repeats` wall times: the least disturbed by whatever else the machine does."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ----------------------------------------------------------------------------------------
# 1. us per step at the lecture configuration


def bench_step(corpus, quick: bool) -> dict:
    Xtr, Ytr = corpus.examples("train", 3)
    n = 1000 if quick else 5000
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, Xtr.shape[0], (32,), generator=g) for _ in range(n)]

    lecture = LectureMLP()

    def eager():
        for ix in batches:
            lecture.step(Xtr[ix], Ytr[ix], 0.1)

    model_cfg, train_cfg = mm.make_configs("lecture", vocab_size=corpus.vocab.size, engine="fused")
    engine = make_engine([mm.MLP(model_cfg)], [train_cfg])
    X_np, Y_np, lr = Xtr.numpy(), Ytr.numpy(), np.array([0.1])

    def fused():  # engines take (K, B, block_size) arrays: one member here
        for ix in batches:
            ix = ix.numpy()
            engine.step(X_np[ix][None], Y_np[ix][None], lr)

    eager(), fused()  # warm up both
    eager_us = timed(eager) / n * 1e6
    fused_us = timed(fused) / n * 1e6
    return {"eager_us_per_step": eager_us, "fused_us_per_step": fused_us, "speedup": eager_us / fused_us,
            "target": ">= 4x", "met": eager_us / fused_us >= 4}


# ----------------------------------------------------------------------------------------
# 2. wall time from scratch to dev <= 2.17: the fast preset vs the lecture recipe


def bench_time_to_target(corpus, quick: bool) -> dict:
    Xtr, Ytr = corpus.examples("train", 3)
    Xdev, Ydev = corpus.examples("dev", 3)
    lecture = LectureMLP()
    g = torch.Generator().manual_seed(0)
    train_seconds, reached_at, dev = 0.0, None, None
    eval_every = 5000
    for step in range(200_000):
        if step % eval_every == 0:
            t0 = time.perf_counter()
        ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
        lecture.step(Xtr[ix], Ytr[ix], 0.1 if step < 100_000 else 0.01)
        if (step + 1) % eval_every == 0:
            train_seconds += time.perf_counter() - t0  # evaluation time is not counted
            dev = lecture.loss(Xdev, Ydev)
            if dev <= TARGET_DEV:
                reached_at = step + 1
                break
            if quick and step + 1 >= 20_000:
                break
    lecture_result = {"steps": reached_at, "train_seconds": train_seconds, "dev_loss": dev}
    if quick and reached_at is None:  # extrapolate the time of the full recipe's crossing
        lecture_result["train_seconds_estimated"] = train_seconds / 20_000 * 110_000

    model_cfg, train_cfg = mm.make_configs("fast", vocab_size=corpus.vocab.size)
    t0 = time.perf_counter()
    result = mm.train(corpus, model_cfg, train_cfg, progress=False)
    fast_wall = time.perf_counter() - t0
    fast = {"steps": result.summary["steps"], "train_seconds": result.summary["seconds"],
            "wall_seconds_with_data": fast_wall, "dev_loss": result.summary["dev_loss"]}
    lecture_seconds = lecture_result.get("train_seconds_estimated", train_seconds) if reached_at is None else train_seconds
    ratio = lecture_seconds / fast["train_seconds"]
    return {"lecture_recipe": lecture_result, "fast_preset": fast, "speedup": ratio,
            "target": "<= 2 s of training and >= 35x",
            "met": fast["dev_loss"] <= TARGET_DEV and fast["train_seconds"] <= 2 and ratio >= 35}


# ----------------------------------------------------------------------------------------
# 3. sampling throughput: batched vs the lecture's one name at a time


def bench_sampling(corpus, quick: bool) -> dict:
    model_cfg, train_cfg = mm.make_configs("fast", vocab_size=corpus.vocab.size)
    model = mm.train(corpus, model_cfg, train_cfg, progress=False).model.eval()
    block = model_cfg.block_size

    @torch.no_grad()
    def one_at_a_time(n):
        g = torch.Generator().manual_seed(0)
        out = []
        for _ in range(n):
            context, name = [0] * block, []
            while True:
                logits, _ = model(torch.tensor([context]))
                probs = F.softmax(logits, dim=1)
                ix = torch.multinomial(probs, num_samples=1, generator=g).item()
                context = context[1:] + [ix]
                if ix == 0:
                    break
                name.append(corpus.vocab.chars[ix])
            out.append("".join(name))
        return out

    n_loop = 200 if quick else 1000
    loop_s = timed(lambda: one_at_a_time(n_loop), repeats=1)
    predictor = mm.model_predictor(model)
    n_batch = 20_000 if quick else 200_000
    batch_s = timed(lambda: mm.sample(predictor, corpus.vocab, n_batch, seed=0))
    loop_rate, batch_rate = n_loop / loop_s, n_batch / batch_s
    return {"loop_names_per_s": loop_rate, "batched_names_per_s": batch_rate, "speedup": batch_rate / loop_rate,
            "batch": n_batch, "target": ">= 200,000 names/s", "met": batch_rate >= 200_000}


# ----------------------------------------------------------------------------------------
# 4. a population of K=16 seeds vs 16 sequential runs of the same steps


def bench_population(corpus, quick: bool) -> dict:
    """16 seeds of the lecture config: mm.train one after another vs one mm.train_population.

    The ratio is of training time (each summary's `seconds`: the training loop, minibatch
    draws, bookkeeping and all) with the dev evaluations replaced by a constant: they are the
    same 16 forward passes over dev either way, and a population does not batch them (at the
    lecture's 200k steps they are a sliver of a run). The end-to-end times of real runs,
    evaluations included, and the largest gap between a member's dev loss and its solo run's
    are reported beside it.
    """
    K, steps = 16, 500 if quick else 2000
    model_cfg, train_cfg = mm.make_configs("lecture", vocab_size=corpus.vocab.size, steps=steps, eval_interval=steps)
    cfgs = [replace(train_cfg, seed=seed) for seed in range(K)]

    def sequential(cfgs):
        return [mm.train(corpus, model_cfg, cfg, progress=False) for cfg in cfgs]

    def together(cfgs):
        return mm.train_population(corpus, model_cfg, cfgs, progress=False)

    def no_eval(*args, **kwargs):
        return 0.0

    warm = [replace(cfg, steps=50, eval_interval=50) for cfg in cfgs]
    sequential(warm[:2]), together(warm)  # warm up both
    with mock.patch("makemore.training.split_nll", no_eval):
        seq_s = sum(r.summary["seconds"] for r in sequential(cfgs))
        pop_s = together(cfgs)[0].summary["seconds"]
    t0 = time.perf_counter()
    solos = sequential(cfgs)
    seq_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    members = together(cfgs)
    pop_wall = time.perf_counter() - t0
    gap = max(abs(m.summary["dev_loss"] - s.summary["dev_loss"]) for m, s in zip(members, solos))
    return {"K": K, "steps": steps, "sequential_seconds": seq_s, "population_seconds": pop_s,
            "speedup": seq_s / pop_s,
            "end_to_end": {"sequential_seconds": seq_wall, "population_seconds": pop_wall,
                           "speedup": seq_wall / pop_wall, "note": "wall time of the calls: data, 2 dev "
                           "evaluations and the final whole-split evaluation of every member included"},
            "max_dev_loss_gap_member_vs_solo": gap, "target": ">= 4x", "met": seq_s / pop_s >= 4}


# ----------------------------------------------------------------------------------------
# 5. memory, and how a step's time grows with batch and hidden size


def bench_scaling(corpus, quick: bool) -> dict:
    cmd = [sys.executable, "-m", "makemore", "train", "--data", corpus.source, "--preset", "default",
           "--steps", "200", "--out", str(HERE / ".rss-run"), "--quiet"]
    subprocess.run(["rm", "-rf", str(HERE / ".rss-run")], check=True)
    subprocess.run(cmd, check=True, capture_output=True)
    subprocess.run(["rm", "-rf", str(HERE / ".rss-run")], check=True)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    Xtr, Ytr = corpus.examples("train", 3)
    rows = []
    batches = (32, 128, 512, 4096) if quick else (32, 64, 128, 256, 512, 1024, 2048, 4096)
    hiddens = (100, 400) if quick else (100, 200, 400, 800)
    for hidden in hiddens:
        for batch in batches:
            row = {"hidden": hidden, "batch": batch}
            for engine_name in ("fused", "autograd"):
                model_cfg, train_cfg = mm.make_configs("lecture", vocab_size=corpus.vocab.size, hidden=hidden,
                                                       engine=engine_name, batch_size=batch)
                engine = make_engine([mm.MLP(model_cfg)], [train_cfg])
                g = torch.Generator().manual_seed(0)
                n = max(5, min(300, 20_000 // batch))
                X_np, Y_np, lr = Xtr.numpy(), Ytr.numpy(), np.array([0.01])
                ixs = [torch.randint(0, Xtr.shape[0], (batch,), generator=g).numpy() for _ in range(n)]
                engine.step(X_np[ixs[0]][None], Y_np[ixs[0]][None], lr)

                def run():
                    for ix in ixs:
                        engine.step(X_np[ix][None], Y_np[ix][None], lr)

                seconds = timed(run, repeats=2) / n
                row[f"{engine_name}_us"] = seconds * 1e6
                row[f"{engine_name}_us_per_example"] = seconds * 1e6 / batch
            rows.append(row)
    return {"peak_rss_mib_default_run": peak_mib, "step_time": rows}


# ----------------------------------------------------------------------------------------
# 6. Scale (issue 8): the CLI end to end on a big multilingual list, each command its own process

BIG_LINES = 700_000
BIG_TIMEOUT = 900          # seconds per command: a slow build reports "timed out", not a hang
BIG_MAX_RSS_MIB = 8192     # a command past this is killed: the machine is shared
STREAM_LINES, STREAM_LIMIT = 100_000, 60  # the first lines of `sample -n 100,000,000`; its target is 10 s
# the targets, whole process (wall time from exec to exit, peak resident memory)
BIG_TARGETS = {
    "train": {"max_seconds": 60, "max_peak_mib": 1536},
    "ngram": {"max_seconds": 120, "max_peak_mib": 3072},
    "sample": {"min_names_per_s": 200_000, "max_peak_mib": 600},
    "stream": {"max_seconds_to_lines": 10},
}


def rss_mib(pid: int) -> float:
    """Resident memory of a live process now (Linux /proc; 0 where it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def last_line(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def run_child(cmd: list[str], timeout: float, max_rss_mib: float, stop_after_lines: int | None = None,
              keep_stdout: bool = True) -> dict:
    """Run `cmd` as its own process: its wall time and peak resident memory (its own ru_maxrss,
    from os.wait4), killed past `timeout` seconds or `max_rss_mib`. With `stop_after_lines`,
    read its stdout and kill it once that many lines came: `seconds_to_lines` is when.

    Never raises for the command's sake: a failure comes back as status "failed" and the last
    line it wrote to stderr.
    """
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        stdout = subprocess.PIPE if stop_after_lines else (out if keep_stdout else subprocess.DEVNULL)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err, stdin=subprocess.DEVNULL)
        killed_for: list[str] = []
        done = threading.Event()

        def watch():  # the one place a child is killed for time or memory
            while not done.wait(0.1):
                if time.perf_counter() - t0 > timeout:
                    killed_for.append(f"timed out after {timeout:.0f} s")
                elif rss_mib(proc.pid) > max_rss_mib:
                    killed_for.append(f"killed past {max_rss_mib:.0f} MiB")
                else:
                    continue
                proc.kill()
                return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        to_lines = None
        if stop_after_lines:
            seen = 0
            while chunk := proc.stdout.read1(1 << 20):
                seen += chunk.count(b"\n")
                if seen >= stop_after_lines:
                    to_lines = time.perf_counter() - t0
                    proc.kill()
                    break
            proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        watcher.join()
        err.seek(0)
        out.seek(0)
        result = {"command": [Path(c).name if c == sys.executable else c for c in cmd],
                  "seconds": seconds, "peak_mib": usage.ru_maxrss / 1024}  # ru_maxrss is KiB on Linux
        if stop_after_lines:
            result["seconds_to_lines"] = to_lines
            result["status"] = "ok" if to_lines is not None else (killed_for[0] if killed_for else
                               f"failed: exit {proc.returncode} before {stop_after_lines:,} lines: {last_line(err.read())}")
        elif killed_for:
            result["status"] = killed_for[0]
        elif proc.returncode != 0:
            result["status"] = f"failed (exit {proc.returncode}): {last_line(err.read())}"
        else:
            result["status"] = "ok"
            if keep_stdout:
                result["stdout_last_line"] = last_line(out.read())
        return result


def meets(row: dict, target: dict) -> bool:
    if row["status"] != "ok":
        return False
    checks = {"max_seconds": lambda v: row["seconds"] <= v,
              "max_peak_mib": lambda v: row["peak_mib"] <= v,
              "min_names_per_s": lambda v: row["names_per_s"] >= v,
              "max_seconds_to_lines": lambda v: row["seconds_to_lines"] <= v}
    return all(checks[k](v) for k, v in target.items())


def big_list(lines: int, timeout: float) -> tuple[Path, dict]:
    """runs/big/names.txt (scripts/make_big_list.py), built once and reused while its sidecar
    says it is whole: the same file bytes for the same seed and Faker version."""
    path = HERE.parent / "runs" / "big" / ("names.txt" if lines == BIG_LINES else f"names-{lines}.txt")
    sidecar = path.with_name(path.name + ".json")
    info = json.loads(sidecar.read_text()) if sidecar.is_file() and path.is_file() else None
    if info is None or info.get("lines") != lines:
        made = run_child([sys.executable, str(HERE.parent / "scripts" / "make_big_list.py"), "--out", str(path),
                          "--lines", str(lines)], timeout, BIG_MAX_RSS_MIB)
        if made["status"] != "ok":
            sys.exit(f"bench: could not build {path}: {made['status']}")
        info = json.loads(sidecar.read_text())
        info["generation_seconds"] = made["seconds"]
    return path, info


def bench_big(corpus, quick: bool, lines: int = BIG_LINES, timeout: float = BIG_TIMEOUT,
              max_rss_mib: float = BIG_MAX_RSS_MIB) -> dict:
    """`makemore data / train --preset fast / eval / ngram --max-context 5 / sample` on the big
    list and, beside them, on names.txt: each command one process, measured whole (imports,
    reading the data, writing the output), as a user meets it. One run each, not a best of
    several: these take minutes on the big list. A command that fails or is killed is a row
    that says so, and the commands that need its output are skipped."""
    path, info = big_list(lines, timeout)
    runs = HERE.parent / "runs" / "bench-big"
    rows = []

    def makemore(*args: str, **kw) -> dict:
        return run_child([sys.executable, "-m", "makemore", *args], timeout, max_rss_mib, **kw)

    for data_name, data in (("big", str(path)), ("names", corpus.source)):
        run = runs / data_name
        shutil.rmtree(run, ignore_errors=True)

        # The sampling targets are for a lecture-size model on names (27 characters); with
        # thousands of characters the output layer is most of the cost (minutes for 1,000,000).

        def row(name: str, label: str, result: dict, target: dict | None = None, target_data: str = "big") -> dict:
            result.update(name=name, label=label, data=data_name)
            if "sample" in name and result["status"] == "ok" and "seconds_to_lines" not in result:
                result["names_per_s"] = SAMPLE_N / result["seconds"]
            if target is not None and data_name == target_data:
                result.update(target=target, met=meets(result, target))
            rows.append(result)
            print(f"[big] {data_name} {label}: {result['status']}, {result['seconds']:.1f} s, "
                  f"{result['peak_mib']:.0f} MiB", file=sys.stderr, flush=True)
            return result

        row("data", "data", makemore("data", "--data", data))
        trained = row("train", "train --preset fast (1,000 steps)", makemore(
            "train", "--data", data, "--preset", "fast", "--steps", "1000", "--out", str(run), "--quiet"),
            BIG_TARGETS["train"])["status"] == "ok"
        skipped = {"command": [], "status": "skipped: train did not finish", "seconds": 0.0, "peak_mib": 0.0}
        row("eval", "eval RUN", makemore("eval", str(run)) if trained else dict(skipped))
        row("ngram", "ngram --max-context 5", makemore("ngram", "--data", data, "--max-context", "5"),
            BIG_TARGETS["ngram"])
        row("sample", f"sample -n {SAMPLE_N:,} > /dev/null", makemore(
            "sample", str(run), "-n", str(SAMPLE_N), "--seed", "0", keep_stdout=False) if trained else dict(skipped),
            BIG_TARGETS["sample"], "names")
        if data_name == "names":  # on the big list the sample row's rate says it: ~50 s for 100,000 lines
            row("sample_stream", f"sample -n {STREAM_N:,}: first {STREAM_LINES:,} lines", run_child(
                [sys.executable, "-m", "makemore", "sample", str(run), "-n", str(STREAM_N), "--seed", "0"],
                min(timeout, STREAM_LIMIT), max_rss_mib, stop_after_lines=STREAM_LINES) if trained else dict(skipped),
                BIG_TARGETS["stream"], "names")
        shutil.rmtree(run, ignore_errors=True)
    targeted = [r for r in rows if "met" in r]
    return {"list": {k: v for k, v in info.items() if k != "by_script"}, "scripts": info.get("by_script"),
            "timeout_s": timeout, "max_rss_mib": max_rss_mib, "rows": rows,
            "met": all(r["met"] for r in targeted)}


SAMPLE_N, STREAM_N = 1_000_000, 100_000_000

# ----------------------------------------------------------------------------------------
# 7. Data parallelism (issue 9): steps/s of `makemore train` on 1 and 2 processes

DP_MODEL = ["--preset", "lecture", "--hidden", "1024", "--batch-size", "1024"]


def bench_data_parallel(corpus, quick: bool) -> dict:
    """Training steps per second at a width where the matrix products dominate (the lecture's
    MLP with 1,024 hidden units, batch 1,024: ~0.2 GFLOP a step) on 1 process and on 2
    (`--nproc 2`, each taking 512 examples of every minibatch and all-reducing ~60k gradients).
    Each figure is the run's own `steps_per_second` (summary.json: the training loop, not the
    start of the processes), the median of a few runs. The 2-process run is compared with two
    baselines: 1 process with 1 thread (the same threads per process: the parallel efficiency
    of the data parallelism itself) and 1 process with as many threads as the 2 processes have
    in all (the same cores: what a user on this machine gains). On a machine with few cores
    the second gains little or nothing: the processes only add a second way to use the same
    cores."""
    steps, repeats = (40, 1) if quick else (300, 3)
    cores = mm_cores()
    runs = HERE / ".dp-runs"

    def steps_per_second(nproc: int, threads: int) -> dict:
        rates = []
        for i in range(repeats):
            out = runs / f"n{nproc}-t{threads}-{i}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "makemore", "train", "--data", corpus.source, *DP_MODEL, "--steps", str(steps),
                   "--eval-interval", str(steps), "--eval-examples", "1000", "--threads", str(threads), "--out", str(out),
                   "--quiet", "--nproc", str(nproc)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=900)
            summary = json.loads((out / "summary.json").read_text())
            rates.append(summary["steps_per_second"])
            shutil.rmtree(out, ignore_errors=True)
        return {"nproc": nproc, "threads_per_process": threads, "steps_per_second": float(np.median(rates)),
                "runs": rates}

    one_1 = steps_per_second(1, 1)
    one_all = steps_per_second(1, max(1, cores)) if cores > 1 else one_1
    two = steps_per_second(2, max(1, cores // 2))
    shutil.rmtree(runs, ignore_errors=True)
    return {"steps": steps, "cores": cores, "model": " ".join(DP_MODEL), "one_process_1_thread": one_1,
            "one_process_all_threads": one_all, "two_processes": two,
            "efficiency_vs_1_thread": two["steps_per_second"] / (2 * one_1["steps_per_second"]),
            "speedup_vs_all_threads": two["steps_per_second"] / one_all["steps_per_second"]}


# ----------------------------------------------------------------------------------------
# 8. How OpenMP's threads wait (makemore/__init__.py): alone on the machine and beside a busy process

# name -> environment; each also names both variables, so makemore's own choice does not apply
OPENMP_SETTINGS = {
    "GNU default (spin 300k)": {"GOMP_SPINCOUNT": "300000"},
    "ACTIVE (spin)": {"OMP_WAIT_POLICY": "ACTIVE"},
    "PASSIVE (sleep)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "makemore: PASSIVE + spin 100k": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "100000"},
}
OPENMP_MODELS = {"mlp default (fused)": ["--preset", "default"], "transformer (autograd)": ["--preset", "transformer"]}


def bench_openmp(corpus, quick: bool) -> dict:
    """Training steps per second (summary.json's, the loop only) of two models under each way
    OpenMP's idle threads may wait, once on a quiet machine and once beside one busy process
    (a Python loop: what a second training run or a browser is to a laptop). Spinning threads
    hold a core each while they wait; beside a busy process they fight it for the core, and
    every parallel region waits for the slowest thread. The median of `repeats` runs each."""
    steps, repeats = (40, 1) if quick else (150, 3)
    runs = HERE / ".openmp-runs"
    rows = []
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for model, flags in OPENMP_MODELS.items():
                for setting, env_vars in OPENMP_SETTINGS.items():
                    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
                    env.update(env_vars)
                    rates = []
                    for i in range(repeats):
                        out = runs / f"{len(rows)}-{i}"
                        shutil.rmtree(out, ignore_errors=True)
                        cmd = [sys.executable, "-m", "makemore", "train", "--data", corpus.source, *flags,
                               "--steps", str(steps), "--eval-interval", str(steps), "--eval-examples", "1000",
                               "--out", str(out), "--quiet"]
                        subprocess.run(cmd, check=True, capture_output=True, timeout=900, env=env)
                        rates.append(json.loads((out / "summary.json").read_text())["steps_per_second"])
                        shutil.rmtree(out, ignore_errors=True)
                    rows.append({"busy_neighbour": busy, "model": model, "setting": setting, "env": env_vars,
                                 "steps_per_second": float(np.median(rates)), "runs": rates})
                    print(f"  openmp: {'busy' if busy else 'quiet'} {model} {setting}: "
                          f"{rows[-1]['steps_per_second']:.1f} steps/s", file=sys.stderr, flush=True)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    shutil.rmtree(runs, ignore_errors=True)
    return {"steps": steps, "repeats": repeats, "rows": rows}


# ----------------------------------------------------------------------------------------
# 10. --precision bfloat16 vs float32: a fused step of each budget recipe and of `mlp-best`


def bench_precision(corpus, quick: bool) -> dict:
    from makemore import recipes
    from makemore.utils import native_bfloat16

    shapes = [(f"{r['budget']:g} s recipe", None, r["settings"]) for r in recipes.tuned_on_names()]
    shapes.append(("mlp-best preset", "mlp-best", {}))
    rows, repeats, all_threads = [], 3 if quick else 5, torch.get_num_threads()
    try:
        for label, preset, settings in shapes:
            model_cfg, train_cfg = mm.make_configs(preset, vocab_size=corpus.vocab.size, **settings)
            X, Y = corpus.examples("train", model_cfg.block_size)
            X_np, Y_np, lr, B = X.numpy(), Y.numpy(), np.array([1e-3]), train_cfg.batch_size
            n = 10 if quick else max(10, min(200, 200_000 // (B * model_cfg.hidden // 64 + 1)))
            g = torch.Generator().manual_seed(0)
            ixs = [torch.randint(0, X.shape[0], (B,), generator=g).numpy() for _ in range(n)]
            for threads in sorted({1, all_threads}):
                torch.set_num_threads(threads)
                row = {"shape": label, "threads": threads}
                for precision in ("float32", "bfloat16"):
                    engine = make_engine([mm.MLP(model_cfg)], [replace(train_cfg, precision=precision, engine="fused")])
                    engine.step(X_np[ixs[0]][None], Y_np[ixs[0]][None], lr)
                    times = []
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        for ix in ixs:
                            engine.step(X_np[ix][None], Y_np[ix][None], lr)
                        times.append((time.perf_counter() - t0) / n * 1e3)
                    row[f"{precision}_ms"] = float(np.median(times))
                    row[f"{precision}_ms_range"] = [float(min(times)), float(max(times))]
                    row["params"] = sum(p.numel() for p in engine.models[0].parameters())
                row["speedup"] = row["float32_ms"] / row["bfloat16_ms"]
                rows.append(row)
    finally:
        torch.set_num_threads(all_threads)
    return {"native_bfloat16": native_bfloat16("cpu"), "repeats": repeats, "rows": rows}


def report_precision(p: dict) -> None:
    print(f"\n10. fused step, float32 / bfloat16 (--precision), ms (median of {p['repeats']}); "
          f"native bfloat16 on this CPU: {'yes' if p['native_bfloat16'] else 'no'}")
    for row in p["rows"]:
        print(f"   {row['shape']:<16} {row['params']:>9,} params, {row['threads']} thread(s): "
              f"{row['float32_ms']:8.2f} / {row['bfloat16_ms']:8.2f}   {row['speedup']:.2f}x")


# ----------------------------------------------------------------------------------------
# 11. The RNN and GRU: the recurrence as a cell loop in Python vs torch's fused kernel (rnn.py)

# (label, preset, overrides): each preset's sizes (rnn 64 wide, batch 32; gru 64/32, gru-long
# 384/128, best 512/128 with embeddings of 128 and weight drop); makemore.py's GRU cell (cho) has
# no fused kernel, so it is timed as the loop only, beside PyTorch's cell (cudnn) both ways.
RECURRENT_SHAPES = [("rnn", "rnn", {}), ("gru (cho)", "gru", {}), ("gru (cudnn)", "gru", {"cell": "cudnn"}),
                    ("gru-long (cho)", "gru-long", {}), ("gru-long (cudnn)", "gru-long", {"cell": "cudnn"}),
                    ("best (cho)", "best", {}), ("best (cudnn)", "best", {"cell": "cudnn"})]


def bench_recurrent(corpus, quick: bool) -> dict:
    """Training steps per second (the autograd engine's step: forward, backward, AdamW) of each
    recurrent preset with RNN.recurrence "loop" and "fused", on minibatches of whole words as
    training draws them: on the CPU with the presets' one thread, and on the GPU where there is
    one. The two ways alternate within each repeat, so that both see the same load on a shared
    machine; each figure is the median of the repeats and the ratio is fused / loop of those
    medians. On the CPU the ratio of the CPU time the steps took (the thread's) is reported
    beside it: a busy neighbour slows the wall clock of both ways, not the work each does. The
    preset's teacher is left out: it changes the targets, not the recurrence; products are float32."""
    repeats, seconds = (3, 0.3) if quick else (7, 1.0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows, all_threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for device in devices:
            for label, preset, overrides in RECURRENT_SHAPES:
                rows.append(recurrent_row(corpus, device, label, preset, overrides, repeats, seconds))
    finally:
        torch.set_num_threads(all_threads)
    return {"repeats": repeats, "threads": 1, "devices": devices, "rows": rows}


def recurrent_row(corpus, device: str, label: str, preset: str, overrides: dict, repeats: int,
                  seconds: float) -> dict:
    from makemore import models
    from makemore.batches import Minibatches

    model_cfg, train_cfg = mm.make_configs(preset, vocab_size=corpus.vocab.size, teacher=0.0, engine="autograd",
                                           device=device, precision="float32", **overrides)
    B, T = train_cfg.batch_size, model_cfg.block_size
    draws = Minibatches(corpus.encoded("train"), T, [0], B, whole_words=True)
    batches = [draws.at(step, 999) for step in range(1000)]
    ways = ["loop", "fused"] if models.build(model_cfg).cell.kernel is not None else ["loop"]
    engines = {}
    for way in ways:
        model = models.build(model_cfg, seed=train_cfg.seed)
        model.recurrence = way
        engines[way] = make_engine([model], [train_cfg])  # each step ends in loss.item(): synchronised
    lr = np.array([train_cfg.lr])
    slowest = 0.0
    for engine in engines.values():  # warm up, and time a step to size the repeats
        for idx, y in batches[:2]:
            engine.step(idx, y, lr)
        t0 = time.perf_counter()
        for idx, y in batches[2:5]:
            engine.step(idx, y, lr)
        slowest = max(slowest, (time.perf_counter() - t0) / 3)
    n = max(3, min(len(batches), int(seconds / slowest)))
    rates, cpu = {way: [] for way in ways}, {way: [] for way in ways}
    for _ in range(repeats):
        for way, engine in engines.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            for idx, y in batches[:n]:
                engine.step(idx, y, lr)
            rates[way].append(n / (time.perf_counter() - t0))
            cpu[way].append((time.thread_time() - c0) / n * 1e3)
    row = {"device": device, "model": label, "preset": preset, **overrides, "hidden": model_cfg.hidden, "batch": B,
           "steps_per_repeat": n}
    for way in ways:
        row[f"{way}_steps_per_s"] = float(np.median(rates[way]))
        row[f"{way}_runs"] = rates[way]
        if device == "cpu":
            row[f"{way}_cpu_ms_per_step"] = float(np.median(cpu[way]))
    if "fused" in ways:
        row["speedup"] = row["fused_steps_per_s"] / row["loop_steps_per_s"]
        if device == "cpu":
            row["cpu_time_speedup"] = row["loop_cpu_ms_per_step"] / row["fused_cpu_ms_per_step"]
    print(f"  recurrent: {device} {label}: " + ", ".join(f"{w} {row[f'{w}_steps_per_s']:.1f}" for w in ways)
          + " steps/s", file=sys.stderr, flush=True)
    return row


def report_recurrent(r: dict) -> None:
    print(f"\n11. rnn/gru training steps/s, cell loop / fused kernel (RNN.recurrence), median of {r['repeats']}; "
          f"on the CPU {r['threads']} thread, and the ratio of CPU time per step")
    for row in r["rows"]:
        fused = f"{row['fused_steps_per_s']:8.1f}   {row['speedup']:.2f}x" if "speedup" in row else f"{'-':>8}"
        if "cpu_time_speedup" in row:
            fused += f"   (CPU time {row['cpu_time_speedup']:.2f}x)"
        print(f"   {row.get('device', 'cpu'):<4} {row['model']:<18} hidden {row['hidden']:>3}, batch {row['batch']:>3}: "
              f"{row['loop_steps_per_s']:8.1f} / {fused}")


# 12. The expensive layer made cheap (issue 25): a training step with the full softmax and
# with the adaptive one (models/softmax.py), by vocabulary size

SOFTMAX_VOCABS = (100, 200, 300, 500, 1000, 2000, 3653, 4400, 5000)  # 3,653: the big list; 4,400: issue 25's
SOFTMAX_SHAPES = ((64, 32), (64, 512), (512, 32), (512, 512))  # (hidden, batch)


def vocab_examples(train, V: int):
    """The big list's training examples read with a V-character vocabulary: the V - 2 most
    frequent characters and the boundary token kept, the rest folded into one (as
    --min-char-count folds them); past the list's own vocabulary, the examples as they are (the
    model's extra characters never occur)."""
    from makemore.data import Examples

    counts = np.bincount(train.ids, minlength=int(train.ids.max()) + 1)
    if V >= len(counts):
        return train
    by_rank = np.argsort(-counts[1:], kind="stable") + 1
    new_id = np.full(len(counts), V - 1, dtype=np.int64)
    new_id[0] = 0  # the boundary token
    new_id[by_rank[:V - 2]] = np.arange(1, V - 1)
    return Examples(new_id[train.ids].astype(train.ids.dtype), train.starts)


def bench_softmax(corpus, quick: bool, vocabs=SOFTMAX_VOCABS, shapes=SOFTMAX_SHAPES, preset: str = "default",
                  fused: bool = True, **settings) -> dict:
    """us per training step of the `default` preset's MLP (hidden and batch varied) on the big
    list read with V characters (vocab_examples), full softmax and adaptive, by the autograd
    engine, and the full softmax by the fused one (its fastest path on the CPU): the variants
    alternate within each repeat, and each figure is the median of the repeats. On the CPU a
    step runs on one thread and is timed by the process's CPU time, which on a quiet core is
    its wall time and on the shared 2-core machine is not inflated by other people's work (its
    wall time was, by up to 20x). The crossover is the smallest V from which adaptive is faster
    than full (both autograd) at every shape: softmax auto's threshold (models/softmax.py)."""
    path, _ = big_list(BIG_LINES, BIG_TIMEOUT)
    train = mm.load_corpus(path).encoded("train")
    repeats, rows = (3 if quick else 5), []
    cpu = settings.get("device", "cpu") == "cpu"
    fused = fused and cpu
    clock = time.process_time if cpu else time.perf_counter
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if cpu else threads)
    try:
        for V in vocabs:
            examples = vocab_examples(train, V)
            for hidden, batch in shapes:
                variants = {}
                for name, softmax, engine in (("full", "full", "autograd"), ("adaptive", "adaptive", "autograd"),
                                              ("fused_full", "full", "fused"))[:3 if fused else 2]:
                    model_cfg, train_cfg = mm.make_configs(preset, vocab_size=V, hidden=hidden, batch_size=batch,
                                                           softmax=softmax, engine=engine, **settings)
                    model = mm.models.build(model_cfg, seed=0).to(train_cfg.device)
                    model.train()
                    model.observe_training_data(examples)
                    variants[name] = make_engine([model], [train_cfg])
                # ~0.2 s of the slowest variant per repeat, at least 3 steps
                n = max(3, min(200, int(2e8 / (batch * hidden * (V + 2 * hidden)))))
                g = np.random.default_rng(0)
                batches = [examples.batch(g.integers(0, len(examples), batch), model_cfg.block_size) for _ in range(n)]
                lr = np.array([1e-3])
                times = {name: [] for name in variants}
                for name, engine in variants.items():  # warm up
                    engine.step(batches[0][0][None], batches[0][1][None], lr)
                for _ in range(repeats):
                    for name, engine in variants.items():
                        t0 = clock()
                        for X, Y in batches:
                            engine.step(X[None], Y[None], lr)
                        times[name].append((clock() - t0) / n * 1e6)
                row = {"vocab": V, "hidden": hidden, "batch": batch, "steps": n}
                row.update({f"{name}_us": float(np.median(t)) for name, t in times.items()})
                row["speedup"] = row["full_us"] / row["adaptive_us"]
                if fused:
                    row["speedup_vs_fused"] = row["fused_full_us"] / row["adaptive_us"]
                rows.append(row)
                print(f"[softmax] V {V} hidden {hidden} batch {batch}: " + ", ".join(
                    f"{k} {v:.0f}" for k, v in row.items() if k.endswith("_us")), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(threads)
    faster = {V: all(r["speedup"] > 1 for r in rows if r["vocab"] == V) for V in vocabs}
    crossover = next((V for i, V in enumerate(vocabs) if all(faster[W] for W in vocabs[i:])), None)
    return {"preset": preset, "settings": settings, "repeats": repeats, "clock": "cpu, 1 thread" if cpu else "wall",
            "rows": rows, "crossover_vocab": crossover, "auto_from": mm.models.softmax.ADAPTIVE_FROM}


def report_softmax(x: dict) -> None:
    fused = "fused_full_us" in x["rows"][0]
    print(f"\n12. training step, full / adaptive softmax (autograd{'; full by the fused engine' if fused else ''}), "
          f"us of {x['clock']} time (median of {x['repeats']}), `{x['preset']}` MLP on the big list read with V "
          f"characters")
    for row in x["rows"]:
        extra = f"   fused full {row['fused_full_us']:9.0f} ({row['speedup_vs_fused']:.2f}x)" if fused else ""
        print(f"   V {row['vocab']:>5}  hidden {row['hidden']:>4}  batch {row['batch']:>4}: "
              f"{row['full_us']:9.0f} / {row['adaptive_us']:9.0f}   {row['speedup']:5.2f}x{extra}")
    print(f"   adaptive faster at every shape from V = {x['crossover_vocab']} on (softmax auto: from {x['auto_from']})")


def bench_serve_item(corpus, quick: bool) -> dict:
    from serve_bench import bench_serve

    return bench_serve(corpus, quick)


def mm_cores() -> int:
    from makemore.devices import usable_cores

    return usable_cores()


# 13. The GPU (issue 26): training steps per second of the presets on the CPU beside the GPU

# (label, preset, settings): `best` also with PyTorch's GRU cell, which runs as one cuDNN kernel
GPU_PRESETS = (("lecture", "lecture", {}), ("default", "default", {}), ("mlp-best", "mlp-best", {}),
               ("best", "best", {}), ("best --cell cudnn", "best", {"cell": "cudnn"}), ("transformer", "transformer", {}))


def bench_gpu(corpus, quick: bool) -> dict:
    """Steps per second of each preset's training step as a run takes it on each device
    (training.steps_per_second: its engine, on the GPU the minibatches drawn there and the step
    captured as a CUDA graph), median of a few timings; only where CUDA is present."""
    from makemore.training import steps_per_second

    if not torch.cuda.is_available():
        print("  gpu: no CUDA GPU here: skipped", file=sys.stderr)
        return {"skipped": "no CUDA GPU"}
    repeats, seconds = (1, 1.0) if quick else (3, 2.0)
    rows = []
    for label, preset, settings in GPU_PRESETS:
        model_cfg, train_cfg = mm.make_configs(preset, vocab_size=corpus.vocab.size, **settings)
        row = {"preset": label, "params": mm.count_params(model_cfg)}
        for device in ("cpu", "cuda"):
            rates = [steps_per_second(corpus, model_cfg, train_cfg, device, seconds) for _ in range(repeats)]
            row[f"{device}_steps_per_s"] = float(np.median(rates))
        row["ratio"] = row["cuda_steps_per_s"] / row["cpu_steps_per_s"]
        print(f"  gpu: {label}: cpu {row['cpu_steps_per_s']:,.0f}, cuda {row['cuda_steps_per_s']:,.0f} steps/s",
              file=sys.stderr, flush=True)
        rows.append(row)
    return {"repeats": repeats, "seconds": seconds, "gpu": torch.cuda.get_device_name(0), "rows": rows}


def report_gpu(r: dict) -> None:
    if "skipped" in r:
        print(f"\n13. the GPU: {r['skipped']}")
        return
    print(f"\n13. training steps/s, CPU beside GPU ({r['gpu']}), median of {r['repeats']}")
    for row in r["rows"]:
        print(f"   {row['preset']:<18} {row['params']:>10,} params: cpu {row['cpu_steps_per_s']:9,.0f}   "
              f"cuda {row['cuda_steps_per_s']:9,.0f}   {row['ratio']:6.2f}x")


BENCHES = {"step": bench_step, "fast": bench_time_to_target, "sample": bench_sampling,
           "population": bench_population, "scaling": bench_scaling, "big": bench_big, "dp": bench_data_parallel,
           "openmp": bench_openmp, "serve": bench_serve_item, "precision": bench_precision,
           "recurrent": bench_recurrent,
           "softmax": bench_softmax,
           "gpu": bench_gpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke test, not for the README)")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated: " + ",".join(BENCHES))
    parser.add_argument("--data", default="names")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--big-lines", type=int, default=BIG_LINES, help="lines of the big list (default 700,000)")
    parser.add_argument("--big-timeout", type=float, default=BIG_TIMEOUT,
                        help=f"seconds before a command of `big` is killed (default {BIG_TIMEOUT})")
    parser.add_argument("--big-max-rss", type=float, default=BIG_MAX_RSS_MIB,
                        help=f"MiB past which a command of `big` is killed (default {BIG_MAX_RSS_MIB})")
    args = parser.parse_args()
    corpus = mm.load_corpus(args.data)
    results = {"machine": machine(), "date": date.today().isoformat(), "quick": args.quick}
    only = args.only.split(",")
    if set(only) != set(BENCHES) and Path(args.out).is_file():
        # a partial run updates its items in the results of earlier runs, each item with its date
        earlier = json.loads(Path(args.out).read_text())
        dates = {k: earlier.get("date") for k in BENCHES if k in earlier}
        results = {**earlier, "dates": {**dates, **earlier.get("dates", {})}}
    results.setdefault("dates", {})
    for name in only:
        if name not in BENCHES:
            sys.exit(f"bench: unknown benchmark {name!r}; choose from {', '.join(BENCHES)}")
        t0 = time.perf_counter()
        if name == "big":
            results[name] = bench_big(corpus, args.quick, args.big_lines, args.big_timeout, args.big_max_rss)
        else:
            results[name] = BENCHES[name](corpus, args.quick)
        results["dates"][name] = f"{date.today().isoformat()}, {machine()}"
        print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    report(results)
    from makemore.outputs import atomic_write_json

    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")


def report(r: dict) -> None:
    print(f"\nmakemore benchmarks - {r['machine']} - {r['date']}\n")
    if r.keys() & {"step", "fast", "sample", "population"}:
        print(f"{'benchmark':<46} {'baseline':>14} {'ours':>14} {'ratio':>8}  target")
    def ratio_line(label: str, baseline: str, ours: str, b: dict, ratio_format: str) -> None:
        print(f"{label:<46} {baseline:>14} {ours:>14} {b['speedup']:>7{ratio_format}}x  "
              f"{b['target']} {'met' if b['met'] else 'MISSED'}")

    if "step" in r:
        s = r["step"]
        ratio_line("1. us/step, lecture config (batch 32)", f"{s['eager_us_per_step']:.0f} us",
            f"{s['fused_us_per_step']:.0f} us", s, ".1f")
    if "fast" in r:
        f = r["fast"]
        lec = f["lecture_recipe"]
        lec_s = lec.get("train_seconds_estimated", lec["train_seconds"])
        ratio_line("2. training time to dev <= 2.17", f"{lec_s:.1f} s", f"{f['fast_preset']['train_seconds']:.2f} s", f, ".0f")
    if "sample" in r:
        s = r["sample"]
        ratio_line("3. sampling, names/s", f"{s['loop_names_per_s']:,.0f}", f"{s['batched_names_per_s']:,.0f}", s, ".0f")
    if "population" in r:
        p = r["population"]
        ratio_line("4. K=16 population vs 16 sequential runs", f"{p['sequential_seconds']:.2f} s",
            f"{p['population_seconds']:.2f} s", p, ".1f")
    if "scaling" in r:
        s = r["scaling"]
        print(f"\n5. peak resident memory of a default-preset training run: {s['peak_rss_mib_default_run']:.0f} MiB")
        print(f"   time per step (us) by hidden size and batch; fused / autograd")
        for row in s["step_time"]:
            print(f"   hidden {row['hidden']:>4}  batch {row['batch']:>5}: {row['fused_us']:>9.0f} / {row['autograd_us']:>9.0f}"
                  f"   ({row['fused_us_per_example']:.2f} / {row['autograd_us_per_example']:.2f} us per example)")
    if "big" in r:
        report_big(r["big"])
    if "dp" in r:
        report_dp(r["dp"])
    if "openmp" in r:
        report_openmp(r["openmp"])
    if "serve" in r:
        v = r["serve"]
        print(f"\n9. makemore serve: {v['unseeded']['requests']} POST /api/sample (n={v['unseeded']['n']}) from "
              f"{v['unseeded']['clients']} clients; peak RSS {v['peak_rss_mb']:.0f} MB (target < {v['rss_target_mb']:.0f})")
        for kind in [k for k in ("unseeded", "seeded", "conditioned") if k in v]:
            x = v[kind]
            print(f"   {kind:<11} p50 {x['p50_ms']:6.1f} ms  p95 {x['p95_ms']:6.1f} ms (target <= {v['p95_target_ms']:.0f})"
                  f"  failures {x['failures']}  {x['requests_per_s']:.0f} req/s")
    if "precision" in r:
        report_precision(r["precision"])
    if "recurrent" in r:
        report_recurrent(r["recurrent"])
    if "softmax" in r:
        report_softmax(r["softmax"])
    if "gpu" in r:
        report_gpu(r["gpu"])


def report_openmp(o: dict) -> None:
    print(f"\n8. OpenMP wait policy: training steps/s ({o['steps']} steps, median of {o['repeats']}), "
          f"quiet machine / beside one busy process")
    models = list(dict.fromkeys(row["model"] for row in o["rows"]))
    settings = list(dict.fromkeys(row["setting"] for row in o["rows"]))
    rate = {(row["busy_neighbour"], row["model"], row["setting"]): row["steps_per_second"] for row in o["rows"]}
    print(f"   {'setting':<32}" + "".join(f" {m:>30}" for m in models))
    for setting in settings:
        cells = "".join(f" {rate[(False, m, setting)]:>13.1f} / {rate[(True, m, setting)]:>6.1f} steps/s" for m in models)
        print(f"   {setting:<32}{cells}")


def report_dp(d: dict) -> None:
    print(f"\n7. data-parallel training, {d['model']}, {d['steps']} steps, {d['cores']} cores: steps/s (median)")
    for key, label in (("one_process_1_thread", "1 process"), ("one_process_all_threads", "1 process"),
                       ("two_processes", "2 processes (--nproc 2)")):
        row = d[key]
        print(f"   {label:<26} x {row['threads_per_process']} thread(s): {row['steps_per_second']:8.1f} steps/s")
    print(f"   scaling efficiency, 2 processes vs 2 x (1 process, 1 thread): {d['efficiency_vs_1_thread']:.0%}")
    print(f"   2 processes vs 1 process on the same {d['cores']} cores: {d['speedup_vs_all_threads']:.2f}x")


def target_text(t: dict) -> str:
    parts = {"max_seconds": "<= {:,.0f} s", "max_peak_mib": "<= {:,.0f} MiB", "min_names_per_s": ">= {:,.0f} names/s",
             "max_seconds_to_lines": "<= {:,.0f} s"}
    return ", ".join(parts[k].format(v) for k, v in t.items())


def report_big(b: dict) -> None:
    info = b["list"]
    scripts = b["scripts"] or {}
    gen = f", built in {info['generation_seconds']:.1f} s" if "generation_seconds" in info else ""
    print(f"\n6. the CLI on a big list: {info['lines']:,} lines ({info['distinct_lines']:,} distinct), "
          f"{info['distinct_characters']:,} distinct characters in {len(scripts.keys() - {'common'})} scripts "
          f"(Faker {info['faker']}{gen}), "
          f"and on names.txt; one process per command, whole-process wall time and peak memory")
    print(f"   {'command':<44} {'data':<6} {'wall s':>8} {'peak MiB':>9} {'result':>18}  target")
    for row in b["rows"]:
        result = ""
        if row["status"] != "ok":
            result = row["status"]
        elif "names_per_s" in row:
            result = f"{row['names_per_s']:,.0f} names/s"
        elif row.get("seconds_to_lines") is not None:
            result = f"{row['seconds_to_lines']:.1f} s to line {STREAM_LINES:,}"
        target = f"{target_text(row['target'])} {'met' if row['met'] else 'MISSED'}" if "target" in row else ""
        wall = f"{row['seconds']:8.1f}" if row["command"] else f"{'-':>8}"
        peak = f"{row['peak_mib']:9,.0f}" if row["command"] else f"{'-':>9}"
        if row["status"] == "ok":
            print(f"   {row['label']:<44} {row['data']:<6} {wall} {peak} {result:>18}  {target}")
        else:  # a failure's message is long: its own line
            print(f"   {row['label']:<44} {row['data']:<6} {wall} {peak} {'':>18}  {target}\n      {result}")


if __name__ == "__main__":
    main()
