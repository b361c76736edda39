"""Data-parallel training (distributed.py): 2 processes with global batch B against 1 process with
batch B, and the launcher's faults as one line. Every multi-process run here is a subprocess
under a timeout, so a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import makemore as mm
from makemore.rundir import load_checkpoint


SRC = str(Path(mm.__file__).resolve().parents[1])
TIMEOUT = 120  # seconds for any one multi-process command: far past what it takes, short of a stall
# (engine, optimizer, lr, weight decay): SGD folds its lr into the fused engine's gradients;
# AdamW keeps moments that must stay identical on every rank; weight decay is applied after the
# all-reduce.
CASES = [("fused", "sgd", 0.2, 0.0), ("fused", "adamw", 0.01, 0.1),
         ("autograd", "sgd", 0.2, 0.0), ("autograd", "adamw", 0.01, 0.1)]
STEPS, BATCH = 25, 48


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    return {**e, **{k: str(v) for k, v in extra.items()}}


def configs(words_path: Path):
    corpus = mm.load_corpus(str(words_path))
    runs = []
    for engine, optimizer, lr, wd in CASES:
        model_cfg, train_cfg = mm.make_configs(vocab_size=corpus.vocab.size, hidden=24, emb_dim=4, dropout=0.0, steps=STEPS,
                                               batch_size=BATCH, lr=lr, optimizer=optimizer, weight_decay=wd,
                                               schedule="constant", eval_interval=10, engine=engine, seed=3)
        runs.append((model_cfg, train_cfg))
    return corpus, runs


# Each rank trains every case of CASES in one process group, in float64, and saves its weights.
WORKER = textwrap.dedent("""
    import sys, dataclasses, numpy as np, torch
    sys.path.insert(0, sys.argv[1])
    import makemore as mm
    from makemore import distributed
    from makemore.rundir import load_checkpoint
    from test_distributed import BATCH, configs
    torch.set_default_dtype(torch.float64)
    with distributed.worker(timeout=30, threads=1) as world:
        corpus, runs = configs(sys.argv[2])
        out = {}
        for i, (model_cfg, train_cfg) in enumerate(runs):
            r = mm.train(corpus, model_cfg, train_cfg, progress=False)
            out.update({f"{i}.{n}": t.detach().numpy() for n, t in r.model.state_dict().items()})
            out[f"{i}.dev_loss"] = np.array(r.summary["dev_loss"])
            out[f"{i}.world_size"] = np.array(r.summary["world_size"])
        for engine in ("fused", "autograd"):  # with dropout: each rank's masks resume where they stopped
            model_cfg, train_cfg = runs[0]
            model_cfg = dataclasses.replace(model_cfg, dropout=0.3)
            train_cfg = dataclasses.replace(train_cfg, engine=engine, steps=20, eval_interval=5)
            whole, parts = f"{sys.argv[3]}/{engine}-whole", f"{sys.argv[3]}/{engine}-parts"
            mm.train(corpus, model_cfg, train_cfg, out=whole, progress=False)
            mm.train(corpus, model_cfg, dataclasses.replace(train_cfg, steps=10), out=parts, progress=False)
            mm.resume(parts, steps=20, progress=False)
            if world.rank == 0:
                a, _ = load_checkpoint(whole + "/last.safetensors")
                b, _ = load_checkpoint(parts + "/last.safetensors")
                out[f"{engine}.resume_gap"] = np.array(max(float((a[n] - b[n]).abs().max()) for n in ("C", "W1", "W_out")))
                out[f"{engine}.saved_ranks"] = np.array(sorted(k for k in b if k.startswith("rank1.")))
        try:  # a global batch that does not split evenly is refused, on every rank alike
            mm.train(corpus, runs[0][0], dataclasses.replace(runs[0][1], batch_size=BATCH + 1), progress=False)
        except mm.UserError as e:
            out["odd_batch_error"] = np.array(str(e))
        np.savez(f"{sys.argv[3]}/rank{world.rank}.npz", **out)
""")


def test_two_processes_give_the_weights_of_one_with_the_same_global_batch(words_file, tmp_path):
    """SGD and AdamW (with weight decay), fused and autograd engines: 2 workers each taking half
    of every minibatch of 48 end where 1 process with batch 48 ends, and on identical weights."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(Path(__file__).parent), str(words_file), str(tmp_path)],
                              env=env(RANK=r, WORLD_SIZE=2, LOCAL_RANK=r, LOCAL_WORLD_SIZE=2,
                                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    assert "multiple of the number of workers (2)" in str(ranks[0]["odd_batch_error"])
    # a run stopped and resumed ends where the run that never stopped ends, dropout masks and all
    assert float(ranks[0]["fused.resume_gap"]) == 0.0 and float(ranks[0]["autograd.resume_gap"]) == 0.0
    assert list(ranks[0]["fused.saved_ranks"]) == ["rank1.fused.dropout_rng"]
    assert list(ranks[0]["autograd.saved_ranks"]) == ["rank1.rng.torch"]
    corpus, runs = configs(words_file)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for i, (model_cfg, train_cfg) in enumerate(runs):
            solo = mm.train(corpus, model_cfg, train_cfg, progress=False)
            assert "world_size" in solo.summary and solo.summary["world_size"] == 1
            assert int(ranks[0][f"{i}.world_size"]) == 2
            moved = 0.0
            for name, t in solo.model.state_dict().items():
                ours = ranks[0][f"{i}.{name}"]
                np.testing.assert_array_equal(ours, ranks[1][f"{i}.{name}"])  # the ranks agree exactly
                np.testing.assert_allclose(ours, t.numpy(), rtol=1e-9, atol=1e-11, err_msg=f"{CASES[i]} {name}")
                moved = max(moved, float(np.abs(t.numpy() - mm.build(model_cfg, seed=3).state_dict()[name].numpy()).max()))
            assert moved > 1e-3  # it trained: the comparison is not of two untouched models
            assert float(ranks[0][f"{i}.dev_loss"]) == pytest.approx(solo.summary["dev_loss"], rel=1e-9)
    finally:
        torch.set_default_dtype(default)


def makemore(*args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "makemore", *map(str, args)], env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def worker_rank(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(e[5:]) for e in environ if e.startswith(b"RANK=")), None)


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    """Until metrics.csv has a row past `step` (the workers are training)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        metrics = run / "metrics.csv"
        if metrics.is_file() and len(metrics.read_text().splitlines()) > 1:
            last = metrics.read_text().splitlines()[-1].split(",")[0]
            if last.isdigit() and int(last) >= step:
                return
        time.sleep(0.1)
    raise AssertionError("the workers never got going")


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]


LONG = ["--hidden", 16, "--emb-dim", 4, "--dropout", 0.0, "--batch-size", 32, "--eval-interval", 20,
        "--eval-examples", 200, "--schedule", "constant", "--optimizer", "sgd", "--lr", 0.2, "--dist-timeout", 20]


def test_sigint_saves_once_and_the_run_resumes_to_the_weights_of_one_process(words_file, tmp_path):
    """Ctrl-C (SIGINT to `makemore train --nproc 2`): every worker stops after the same step,
    rank 0 saves once; --resume finishes the run on 2 workers, and the result is the 1-process
    run of the same settings (no dropout: the same global minibatches, the same updates)."""
    run = tmp_path / "run"
    steps = 100_000
    proc = makemore("train", "--data", words_file, "--out", run, "--steps", steps, "--nproc", 2, *LONG, "--quiet")
    try:
        wait_for_step(run, 40, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.count("interrupted at step") == 1 and f"--resume {run} --nproc 2" in err and not errors(err), err
    tensors, meta = load_checkpoint(run / "last.safetensors")
    stopped = meta["step"]
    assert 40 <= stopped < steps and int(tensors["dist.world_size"]) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["world_size"] == 2 and summary["steps"] == stopped

    final = stopped + 30
    proc = makemore("train", "--resume", run, "--steps", final, "--nproc", 2, "--quiet")
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0 and not errors(err), err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == final and summary["world_size"] == 2
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == sorted({int(r.split(",")[0]) for r in rows})  # one row per step

    corpus = mm.load_corpus(str(words_file))
    flags = dict(zip([f.lstrip("-").replace("-", "_") for f in LONG[0::2]], LONG[1::2]))
    flags = {k: v for k, v in flags.items() if k != "dist_timeout"}
    model_cfg, train_cfg = mm.make_configs(vocab_size=corpus.vocab.size, steps=final, **flags)
    solo = _last_weights(corpus, model_cfg, train_cfg, tmp_path / "solo")
    last, _ = load_checkpoint(run / "last.safetensors")
    for name, value in solo.items():
        np.testing.assert_allclose(last[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def _last_weights(corpus, model_cfg, train_cfg, out: Path) -> dict:
    mm.train(corpus, model_cfg, train_cfg, out=out, progress=False)
    tensors, _ = load_checkpoint(out / "last.safetensors")
    return {n: t for n, t in tensors.items() if not n.startswith(("optim.", "rng."))}


def test_a_killed_worker_ends_the_run_with_one_line(words_file, tmp_path):
    run = tmp_path / "run"
    proc = makemore("train", "--data", words_file, "--out", run, "--steps", 100_000, "--nproc", 2, *LONG, "--quiet")
    try:
        wait_for_step(run, 20, proc)
        workers = {worker_rank(pid): pid for pid in children(proc.pid)}
        os.kill(workers[1], signal.SIGKILL)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=TIMEOUT)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 1
    lines = errors(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"makemore: error: worker 1 of 2 (pid {workers[1]}) was killed by SIGKILL"), err
    assert "--resume" in lines[0]
    assert took < 20, took  # at once: the dead worker's connections close; never torch's 30 minutes
    assert not [pid for pid in workers.values() if Path(f"/proc/{pid}").exists() and worker_rank(pid) is not None]


def test_a_bad_rendezvous_address_is_one_line(words_file, tmp_path):
    proc = makemore("train", "--data", words_file, "--out", tmp_path / "run", "--nproc", 1, "--nnodes", 2,
                    "--rdzv-endpoint", "no-such-host.invalid:29500", "--dist-timeout", 5)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1
    assert err.count("\n") == 1 and err.startswith("makemore: error: the rendezvous host 'no-such-host.invalid'"), err
    assert not (tmp_path / "run").exists()


def test_the_resume_note_says_what_changes_in_either_direction(monkeypatch):
    from makemore import distributed

    monkeypatch.setattr(distributed, "size", lambda: 1)
    fewer = distributed.resume_note({"dist.world_size": torch.tensor(2)})
    assert "saved by 2 workers and resumes on 1" in fewer and "drawn by 1 worker instead of 2" in fewer
    assert "past the first" not in fewer
    monkeypatch.setattr(distributed, "size", lambda: 4)
    assert "workers past the first 2 start afresh" in distributed.resume_note({"dist.world_size": torch.tensor(2)})
    assert distributed.resume_note({"dist.world_size": torch.tensor(4)}) is None
