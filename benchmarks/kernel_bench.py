"""`make bench`'s items 7 to 13: data parallelism, OpenMP's waiting, serving, precision,
the recurrent cells, the adaptive softmax and the GPU, each a ratio measured in one run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import makemore as mm
from makemore.engines import make_engine

HERE = Path(__file__).resolve().parent

from big_bench import BIG_LINES, BIG_TIMEOUT, big_list  # noqa: E402  the big list's vocabulary

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
    settings = {"device": "cpu", **settings}  # the configs' default, auto, is for a run to resolve
    cpu = settings["device"] == "cpu"
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
