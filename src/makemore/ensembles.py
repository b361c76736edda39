"""Seed ensembles: K seeds of one config, trained in one loop or side by side, averaged when used.

`makemore train --seeds K` (`train_ensemble`) trains K seeds of one config into out/seed-<s>/
and writes out/ensemble.json; eval, sample and score read the directory as one model, the mean
of the members' probabilities (predict.ensemble_predictor).

Where the K members train is decided here (`side_by_side`). One training loop steps its
members in turn (training.train_members): on a CPU, K members then take K times as long as one.
Meanwhile a budget run of a small model steps on one thread (budget.ThreadTrial finds it faster)
and leaves every other core idle. So where the run is on the CPU and the machine has a core for
each member, each member trains in a process of its own on its share of the cores, and all of
them take the time of one. On 2 cores, `--budget 60 --seeds 2` on names.txt trains each seed
for the whole 60 s (docs/budgets.md has the figures).

A member's process runs the same loop on that member's config alone: its initial weights and
its minibatches come from its seed, exactly as in the shared loop, so a run of fixed steps ends
with the same models either way (up to the rounding of another thread count). Each process
writes its member's run directory, where the caller keeps one, and hands its result back with
the best weights (through files in a private temporary folder).

Signals: Ctrl-C reaches every process of the terminal's group, and each member stops at the end
of its step and saves, as a run in one process does (loop.StopSignals). A SIGINT or SIGTERM sent
to this process alone is passed on to the members as SIGTERM, which does the same.
"""

from __future__ import annotations

import math
import signal
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import distributed as dist
from . import jobs, models, rundir
from .config import TrainConfig
from .data import Corpus
from .devices import resolve_device, usable_cores
from .errors import UserError
from .loop import TrainResult
from .models import ModelConfig
from .outputs import new_dir
from .predict import ensemble_predictor, split_nll
from .training import check_data, train_members


@dataclass
class EnsembleResult:
    results: list[TrainResult]  # one per seed, in order
    seeds: list[int]
    dev_loss: float  # of the ensemble: mean over dev of -log(mean over members of p(y))
    run_dir: Path | None = None
    engine: str = ""
    members: list[str] = field(default_factory=list)  # ensemble.json's members: run directories in run_dir
    mix: dict | None = None  # the fitted mixture with a count model, if one was (fit.py)
    processes: int = 1  # the members trained side by side in this many processes, or in turn in one

    @property
    def status(self) -> str:
        """The first member's fate that is not "completed", else "completed"."""
        return next((r.status for r in self.results if r.status != "completed"), "completed")


def member_name(seed: int) -> str:
    return f"seed-{seed}"


def side_by_side(members: int, train_cfg: TrainConfig) -> bool:
    """Whether `members` seeds of this config train in a process each (the module doc): on the
    CPU, outside a data-parallel run, with a core for each member's threads."""
    if members < 2 or dist.world() is not None or resolve_device(train_cfg.device)[0] != "cpu":
        return False
    return members * max(1, train_cfg.threads) <= usable_cores()


def train_ensemble(corpus: Corpus, model_cfg: ModelConfig, train_cfg: TrainConfig, seeds: int | Sequence[int],
                   out: str | Path | None = None, progress: bool | None = None,
                   extra_summary: dict | None = None, teacher: np.ndarray | None = None,
                   processes: bool | None = None) -> EnsembleResult:
    """Train `seeds` (a count K: train_cfg.seed, +1, ..., +K-1; or a list) of one config into
    out/seed-<s>/ and out/ensemble.json. `processes`: True trains the members side by side, one
    process each; False in turn in one loop; None (default) side by side where `side_by_side`
    allows."""
    seeds = [train_cfg.seed + i for i in range(seeds)] if isinstance(seeds, int) else list(seeds)
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise UserError(f"an ensemble needs distinct seeds, got {seeds}")
    apart = side_by_side(len(seeds), train_cfg) if processes is None else bool(processes) and len(seeds) > 1
    if apart and not train_cfg.threads:
        train_cfg = replace(train_cfg, threads=max(1, usable_cores() // len(seeds)))
    cfgs = [replace(train_cfg, seed=s) for s in seeds]
    names = [member_name(s) for s in seeds]
    with ExitStack() as stack:
        out = None if out is None else stack.enter_context(
            new_dir(out, keep=lambda d: any((d / n / "best.safetensors").exists() for n in names)))
        dirs = [None] * len(seeds) if out is None else [out / n for n in names]
        if apart:
            for cfg in cfgs:  # a bad config fails here at once, not in each process after its start
                check_data(corpus, model_cfg, cfg)
            extra = {**(extra_summary or {}), "side_by_side": len(seeds)}
            results = train_apart(corpus, model_cfg, cfgs, dirs, progress, extra, teacher)
        else:
            results = train_members(corpus, model_cfg, cfgs, dirs, progress, extra_summary=extra_summary,
                                    teacher=teacher)
    # members that have a best checkpoint (all, unless interrupted before one)
    kept = [i for i, r in enumerate(results) if r.run_dir is None or (r.run_dir / "best.safetensors").is_file()]
    dev_loss = (split_nll(ensemble_predictor([results[i].model for i in kept]), corpus.encoded("dev"), None, progress)
                if kept else math.nan)
    if out is not None and kept:
        rundir.write_ensemble(out, [names[i] for i in kept], {"seeds": [seeds[i] for i in kept], "dev_loss": dev_loss})
    return EnsembleResult(results, seeds, dev_loss, out, results[0].summary["engine"], [names[i] for i in kept],
                          processes=len(seeds) if apart else 1)


# --------------------------------------------------------------------------------------------
# Side by side: one process per member

MEMBER = "from makemore.ensembles import member_main; member_main()"  # jobs.start


def train_apart(corpus: Corpus, model_cfg: ModelConfig, cfgs: list[TrainConfig], dirs: list[Path | None],
                progress: bool | None, extra_summary: dict, teacher: np.ndarray | None) -> list[TrainResult]:
    """Each member trained by `train_members` alone in a process of its own, all at once; the
    first member's process shows the progress. An error in one member stops the others (their
    runs are saved as interrupted ones) and is raised here: a user's error as it was, anything
    else as a RuntimeError with the member's traceback."""
    with tempfile.TemporaryDirectory(prefix="makemore-seeds-") as tmp:  # 0700: only this user reads the jobs
        shared = Path(tmp) / "shared.pickle"
        jobs.dump(shared, (corpus, model_cfg, extra_summary, teacher))
        children, results = [], []
        for k, (cfg, run_dir) in enumerate(zip(cfgs, dirs)):
            job, result = Path(tmp) / f"member-{k}.pickle", Path(tmp) / f"result-{k}.pickle"
            jobs.dump(job, (cfg, run_dir, progress if k == 0 else False))
            children.append(jobs.start(MEMBER, [shared, job, result]))
            results.append(result)
        outcomes: list = [None] * len(children)
        with jobs.passing_signals(children):
            while any(outcome is None for outcome in outcomes):
                for k, child in enumerate(children):
                    if outcomes[k] is None and child.poll() is not None:
                        outcomes[k] = jobs.outcome(results[k], child.returncode, member_name(cfgs[k].seed))
                        if outcomes[k][0] != "ok":  # the others would train for nothing
                            jobs.send(children, signal.SIGTERM)
                time.sleep(0.05)
    failed = next((o for o in outcomes if o[0] != "ok"), None)
    if failed is not None:
        raise UserError(failed[1]) if failed[0] == "user" else RuntimeError(failed[1])
    trained = []
    for (_, fields, weights), cfg, run_dir in zip(outcomes, cfgs, dirs):
        model = models.build(model_cfg, seed=cfg.seed)
        model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()})
        if fields["dev_log_probs"] is not None:
            fields["dev_log_probs"] = torch.from_numpy(fields["dev_log_probs"])
        trained.append(TrainResult(model=model, run_dir=run_dir, **fields))
    return trained


def member_main() -> None:
    """A member's process (MEMBER): argv holds the shared job (corpus, model config, summary
    extras, teacher), the member's own (train config, run directory, progress) and where to put
    its outcome: ("ok", its TrainResult's fields but the model, the model's weights), or ("user",
    message) / ("error", traceback)."""
    shared, job, result = sys.argv[1:4]
    cfg = None
    try:
        corpus, model_cfg, extra_summary, teacher = jobs.load(shared)
        cfg, run_dir, progress = jobs.load(job)
        trained = train_members(corpus, model_cfg, [cfg], [run_dir], progress, extra_summary=extra_summary,
                                teacher=teacher)[0]
        fields = {"status": trained.status, "summary": trained.summary, "message": trained.message,
                  "history": trained.history, "signal": trained.signal, "dev_positions": trained.dev_positions,
                  "dev_log_probs": None if trained.dev_log_probs is None else trained.dev_log_probs.numpy()}
        weights = {name: t.detach().cpu().numpy() for name, t in trained.model.state_dict().items()}
        outcome = ("ok", fields, weights)
    except UserError as e:
        outcome = ("user", str(e))
    except KeyboardInterrupt:  # a Ctrl-C before the loop took over the signals, or a second one
        outcome = ("user", f"{member_name(cfg.seed) if cfg else 'a member'} was interrupted")
    except Exception:  # the parent reports it
        outcome = ("error", traceback.format_exc())
    jobs.dump(Path(result), outcome)
