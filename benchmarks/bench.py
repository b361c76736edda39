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
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import makemore as mm
from makemore.engines import make_engine

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # its items' modules beside it, also when loaded by path (tests)

from big_bench import BIG_LINES, BIG_MAX_RSS_MIB, BIG_TIMEOUT, bench_big, report_big  # noqa: E402
from kernel_bench import (bench_data_parallel, bench_gpu, bench_openmp, bench_precision,  # noqa: E402
                          bench_recurrent, bench_serve_item, bench_softmax, report_dp, report_gpu,
                          report_openmp, report_precision, report_recurrent, report_softmax)

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

    warm = [replace(cfg, steps=50, eval_interval=50) for cfg in cfgs]
    sequential(warm[:2]), together(warm)  # warm up both
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
        print("   time per step (us) by hidden size and batch; fused / autograd")
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



if __name__ == "__main__":
    main()
