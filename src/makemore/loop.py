"""The training loop of makemore part 2: minibatch gradient descent on the training split, the
learning rate on a schedule, the dev loss estimated at intervals, checkpoints.

One loop (Trainer) trains K >= 1 *members* at once: K = 1 is a plain run; K seeds of one config
are a seed ensemble; K learning rates are a sweep's population. It knows nothing of how a step is
computed: an engine (engines.py) does forward, backward and update for all members; and nothing
of where it runs: runtime.Setup says. Each member keeps its own record (RunLog: metrics, best
checkpoint, fate; a member that diverges stops alone). Member k computes what a solo run with
its config computes.

The dev loss during training is estimated on a fixed random subset of the dev split
(`eval_examples`, the same subset for every run on the same data, so that runs compare); the
final figures in summary.json are the whole dev split and a fixed subset of at most
FINAL_TRAIN_EXAMPLES training examples. Callbacks see every evaluation, so a caller (the tuner, a
notebook) can watch or stop a run without the loop growing flags.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import distributed as dist
from . import rundir
from .batches import Minibatches, lr_at
from .budget import Plan, ThreadTrial
from .models import Model
from .predict import model_predictor, target_log_probs, tensor_nll
from .runtime import set_threads

# A uniform guess costs log(vocab) nats per character. A minibatch loss past this means the
# weights have blown up even if float32 has not overflowed to inf/NaN yet.
DIVERGED_LOSS = 1e4
# The summary's train loss is over at most this many training examples (a fixed random subset):
# ten times the estimates' examples during training.
FINAL_TRAIN_EXAMPLES = 250_000


@dataclass
class TrainResult:
    model: Model
    status: str  # "completed", "interrupted" or "diverged"
    summary: dict
    run_dir: Path | None = None
    message: str = ""
    history: list[dict] = field(default_factory=list)
    signal: str | None = None  # "SIGINT" or "SIGTERM" when interrupted
    # log p(target) of the dev examples the final dev loss read (all of them, or those at
    # dev_positions), under the best weights, float64 (a plain run's): fitting the mixture reads
    # them rather than scoring the dev split again
    dev_log_probs: torch.Tensor | None = None
    dev_positions: np.ndarray | None = None


class Progress:
    """A tqdm bar on a terminal; plain log lines at each evaluation otherwise (CI, pipes)."""

    def __init__(self, total: int, start: int, enabled: bool | None):
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.quiet = enabled is False
        self.bar = None
        if self.tty and not self.quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, leave=True)

    def update(self, n: int, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", refresh=False)

    def log(self, row: dict, total: int, rate: float, label: str = "") -> None:
        """`label` says whose row it is when several members train at once."""
        if self.quiet or self.bar is not None:
            if self.bar is not None and row.get("dev_loss") is not None:
                self.bar.write(f"step {row['step']:>7}: {label}dev {row['dev_loss']:.4f}")
            return
        eta = (total - row["step"]) / rate if rate > 0 else 0.0
        train = f"{row['train_loss']:.4f}" if row.get("train_loss") is not None else "  -   "
        print(f"step {row['step']:>7}/{total}  {label}train {train}  dev {row['dev_loss']:.4f}  "
              f"lr {row['lr']:.3g}  {rate:,.0f} steps/s  eta {eta:,.0f}s", file=sys.stderr, flush=True)

    def retotal(self, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class StopSignals:
    """While training, SIGINT (Ctrl-C) and SIGTERM (kill, a job scheduler, a container stop)
    ask the loop to stop at the end of the current step; it then saves and reports, the same
    way for both. A second Ctrl-C interrupts at once. Only the main thread can set signal
    handlers; elsewhere the loop stops on KeyboardInterrupt alone.

    [dist] `deferred` (data-parallel training): a signal is only noted in `asked`; the ranks
    agree on `received` after each step (distributed.agree), so that all stop at the same step."""

    NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

    def __init__(self, deferred: bool = False):
        self.deferred = deferred

    def __enter__(self):
        self.received: str | None = None
        self.asked: str | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.NAMES:
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.deferred:
            self.asked = self.asked or self.NAMES[signum]
            return
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = self.received or self.NAMES[signum]

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


class RunLog:
    """One member's record as it trains: metrics.csv, the best-on-dev weights and checkpoint,
    the last checkpoint, and summary.json at the end: an ordinary run directory per member."""

    def __init__(self, model: Model, run_dir: Path | None, best_dev: float = math.inf, best_step: int = 0):
        self.model, self.run_dir = model, run_dir
        self.best_dev, self.best_step = best_dev, best_step
        self.best_weights = self.weights_copy()
        self.history: list[dict] = []  # the rows with a dev loss
        self.dev_log_probs: torch.Tensor | None = None  # set by finish (TrainResult.dev_log_probs)
        self.dev_positions: np.ndarray | None = None
        self.pending: list[dict] = []  # rows not yet in metrics.csv (written at each evaluation)

    def weights_copy(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().clone() for n, t in self.model.state_dict().items()}  # buffers too

    def record(self, step: int, train_loss: float | None, dev: float | None, lr: float, seconds: float) -> dict:
        """A metrics row; with a dev loss, keep the weights if they are the best so far."""
        row = {"step": step, "train_loss": train_loss, "dev_loss": dev, "lr": lr, "seconds": round(seconds, 3)}
        self.pending.append(row)
        if dev is None:
            return row
        self.history.append(row)
        if dev < self.best_dev:
            self.best_dev, self.best_step = dev, step
            self.best_weights = self.weights_copy()
            if self.run_dir is not None:
                rundir.save_checkpoint(self.run_dir / "best.safetensors", self.best_weights,
                                       {"step": step, "dev_loss": dev})
        self.flush()
        return row

    def flush(self) -> None:
        if self.run_dir is not None and self.pending:
            rundir.append_metrics(self.run_dir / "metrics.csv", self.pending)
        self.pending.clear()

    def save_last(self, step: int, state: dict[str, torch.Tensor], seconds: float, engine: str) -> None:
        """Weights and `state` (optimizer, RNGs) to resume from."""
        if self.run_dir is None:
            return
        rundir.save_checkpoint(self.run_dir / "last.safetensors", {**self.model.state_dict(), **state},
                               {"step": step, "best_dev": self.best_dev, "best_step": self.best_step,
                                "seconds": seconds, "engine": engine})

    def _dev_loss(self, predictor, dev_ex, dev_pos, progress) -> float:
        """The final dev loss over the examples at `dev_pos` (None: all); in a plain run each
        one's log-probability is kept (dev_log_probs, dev_positions) for the mixture to reuse."""
        self.dev_log_probs, self.dev_positions = None, dev_pos
        if dist.world() is not None:
            return dist.mean_nll(predictor, dev_ex, dev_pos, progress, "dev loss")
        self.dev_log_probs = target_log_probs(predictor, dev_ex, dev_pos, progress, "dev loss")
        return -self.dev_log_probs.sum().item() / max(1, self.dev_log_probs.shape[0])

    def finish(self, corpus, summary: dict, progress: bool | None, final_examples: int = 0) -> dict:
        """Put the best-on-dev weights back in the model and report them: the dev loss over
        the whole dev split, the train loss over a fixed subset of the training split (all of
        it up to FINAL_TRAIN_EXAMPLES); with `final_examples`, each over a fixed subset of that
        many (tune's trials on a big list, and a budget run's where the whole splits would take
        more than budget.FINAL_SHARE of it: the final losses cost time in proportion to the
        data, not to the run). Writes summary.json: `summary` with those figures."""
        with torch.no_grad():
            for n, t in self.model.state_dict().items():
                t.copy_(self.best_weights[n])
        self.model.eval()
        predictor = model_predictor(self.model)
        train_ex, dev_ex = corpus.encoded("train"), corpus.encoded("dev")
        train_pos = train_ex.subset(final_examples or FINAL_TRAIN_EXAMPLES)
        dev_pos = dev_ex.subset(final_examples) if final_examples else None
        summary = {
            "model": self.model.cfg.name,
            "params": self.model.num_params(),
            "steps": summary.pop("steps"),
            "best_step": self.best_step,
            "train_loss": dist.mean_nll(predictor, train_ex, train_pos, progress, "train loss"),
            "train_loss_examples": int(len(train_pos)),
            "dev_loss": self._dev_loss(predictor, dev_ex, dev_pos, progress),
            "dev_loss_examples": len(dev_ex) if dev_pos is None else int(len(dev_pos)),
            **summary,
            **({"final_examples": final_examples} if final_examples else {}),
        }
        if self.run_dir is not None:
            rundir.write_summary(self.run_dir, summary)
        return summary


def diverged_message(step: int, loss: float, lr: float, log: RunLog) -> str:
    return (f"training stopped at step {step}: the loss became {loss:.4g} - the learning rate "
            f"({lr:g}) is most likely too high; the best checkpoint (step {log.best_step}, dev "
            f"{log.best_dev:.4f}) is kept")


class Trainer:
    """The loop over K members, once their models, engine and records are made (training.py).

    `budget` > 0 plans the steps to fill that many seconds (budget.Plan); `teacher` is the count
    model's distribution for every training example (teacher.py), or None; `start` and `elapsed`
    are where a resumed run stopped; `extra` is added to every member's summary.json."""

    def __init__(self, corpus, train_cfgs, setup, engine, logs: list[RunLog], batches: Minibatches,
                 teacher: np.ndarray | None, budget: float, start: int = 0, elapsed: float = 0.0,
                 progress: bool | None = None, callbacks: tuple[Callable[[dict], None], ...] = (),
                 extra: dict | None = None):
        self.corpus, self.cfgs, self.setup, self.engine, self.logs = corpus, list(train_cfgs), setup, engine, logs
        self.progress, self.extra = progress, extra or {}
        self.members = [log.model for log in logs]
        self.batches, self.teacher, self.callbacks = batches, teacher, callbacks
        self.K, first = len(logs), train_cfgs[0]
        self.step, self.start, self.elapsed = start, start, elapsed
        self.total, self.eval_every = first.steps, first.eval_every
        self.dev_ex = corpus.encoded("dev")
        self.dev_pos = self.dev_ex.subset(first.eval_examples)
        self.dev_tensors = None  # on a GPU, the dev subset's contexts and targets live there
        if setup.device != "cpu":
            X, Y = self.dev_ex.batch(self.dev_pos, self.members[0].cfg.block_size)
            self.dev_tensors = (torch.from_numpy(X).to(setup.device), torch.from_numpy(Y).to(setup.device))
        self.plan = Plan(budget, self.total, start) if budget > 0 else None
        self.trial = ThreadTrial(torch.get_num_threads(), first.budget) if setup.thread_trial else None
        if self.plan is not None:
            self.eval_every = self.plan.eval_every
        self.log_every = max(1, min(self.eval_every, self.total // 2000))
        self.bar = Progress(self.total, start, progress)
        self.active = np.ones(self.K, dtype=bool)  # not diverged
        self.status, self.messages = ["completed"] * self.K, [""] * self.K
        self.last_step = [start] * self.K
        self.interrupted_by: str | None = None
        self.evaluated_at = start  # the step of the last dev estimate (a resumed run's was saved)
        # the minibatch losses since the last row (a tensor on the engine's device where it keeps
        # them there: read at the rows alone)
        self.interval_loss = np.zeros(self.K)
        self.interval_n, self.bar_pending = 0, 0
        self.lrs = np.array([lr_at(c, start, self.total) for c in self.cfgs])
        self.eval_seconds = 0.0  # time spent on dev estimates: a budget plan counts steps without it
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        """Training time of this run, across resumes."""
        return self.elapsed + time.perf_counter() - self.t0

    def run(self) -> list[TrainResult]:
        dist.start_step(self.start)
        with StopSignals(deferred=dist.world() is not None) as stop:  # [dist] the ranks agree when to stop
            try:
                if self.start == 0:
                    self.record(evaluate=True)
                while self.step < self.total and self.active.any() and stop.received is None:
                    if self.plan is not None and self.follow_plan():
                        break  # the budget is spent
                    self.train_step(stop)
                if self.plan is not None and self.plan.stopped_early and self.active.any():
                    self.record(evaluate=True)  # the budget ran out before the plan: evaluate where it stopped
                if stop.received is not None:
                    if self.step > self.evaluated_at and self.active.any():
                        # what it learned since the last estimate counts: a long budget's first
                        # estimate may be minutes away, and best.safetensors the untrained model
                        self.record(evaluate=True)
                    self.stop_all(stop.received)
            except KeyboardInterrupt:  # a second Ctrl-C, or Ctrl-C outside the main thread
                self.stop_all("SIGINT")
            finally:
                self.bar.close()
        return self.finish()

    def train_step(self, stop) -> None:
        """One update of every active member, its losses checked and logged. On a CPU the losses
        come back as NumPy and are checked every step; on a GPU they stay there, summed, and are
        read (one synchronisation) at each row of metrics.csv."""
        step = self.step
        self.lrs = np.array([lr_at(c, step, self.total) if on else 0.0 for c, on in zip(self.cfgs, self.active)])
        idx, y = self.batches.at(step, self.total - 1)
        losses = self.engine.step(idx, y, self.lrs, None if self.teacher is None else self.batch_teacher(step))
        losses = dist.agree(losses, stop)  # [dist] the global minibatch's losses; a signal stops every rank
        self.step = step = step + 1
        self.interval_n += 1
        self.bar_pending += 1
        is_eval = step % self.eval_every == 0 or step == self.total
        logged = step % self.log_every == 0 or is_eval
        on_host = isinstance(losses, np.ndarray)
        if on_host or logged:
            host = losses if on_host else losses.float().cpu().numpy()
            for k in np.flatnonzero(self.active & ~(host <= DIVERGED_LOSS)):  # inf, NaN or blown up
                self.diverge(k, float(host[k]))
        if on_host:
            self.interval_loss += np.where(self.active, losses, 0.0)
        else:
            if not torch.is_tensor(self.interval_loss):  # the engine keeps its losses on its device
                self.interval_loss = torch.as_tensor(self.interval_loss, dtype=torch.float32, device=losses.device)
            self.interval_loss += losses.float()
        if logged:
            if self.active.any():  # the bar shows the members' mean loss
                self.bar.update(self.bar_pending, float(host[self.active].mean()), float(self.lrs[self.active].max()))
            self.bar_pending = 0
            self.record(evaluate=is_eval)

    def batch_teacher(self, step: int) -> np.ndarray:
        """The teacher's distributions for update `step`'s targets: (K, B, V), or for a sequence
        model one per column of each window, (K, B, T, V), zero where a column predicts nothing."""
        positions = self.batches.positions(step)
        if not self.members[0].sequence:
            return self.teacher[positions]
        predicted, valid = self.batches.window_positions(positions, self.batches.block_size)
        return self.teacher[predicted] * valid[..., None]

    def diverge(self, k: int, loss: float) -> None:
        self.status[k], self.last_step[k] = "diverged", self.step
        self.messages[k] = diverged_message(self.step, loss, float(self.lrs[k]), self.logs[k])
        self.logs[k].flush()
        self.engine.freeze(k, self.logs[k].best_weights)
        self.active[k] = False

    def evaluate_dev(self, k: int) -> float:
        model = self.members[k]
        if self.dev_tensors is not None:
            loss = tensor_nll(model_predictor(model), *self.dev_tensors)
        else:
            loss = dist.mean_nll(model_predictor(model), self.dev_ex, self.dev_pos)
        model.train()
        return loss

    def record(self, evaluate: bool) -> None:
        """A metrics row per active member (with a dev estimate if `evaluate`), the last
        checkpoint saved at evaluations, the progress line, the callbacks."""
        t_eval = time.perf_counter()
        devs = {k: self.evaluate_dev(k) if evaluate else None for k in np.flatnonzero(self.active)}
        if evaluate and self.plan is not None:
            self.plan.estimated(time.perf_counter() - t_eval)
        if evaluate and self.plan is not None and not self.plan.calibrated:
            self.plan.evaluated(time.perf_counter() - t_eval)  # the estimates alone, until the plan is made
            if self.step == self.start == 0:
                self.plan.check_feasible()  # before anything is written: a budget too small is one error line
        rows = {}
        interval = (self.interval_loss if isinstance(self.interval_loss, np.ndarray)
                    else self.interval_loss.cpu().numpy())  # one read of the GPU's sums per row
        for k, dev in devs.items():
            train_loss = float(interval[k]) / self.interval_n if self.interval_n else None
            rows[k] = self.logs[k].record(self.step, train_loss, dev, float(self.lrs[k]), self.seconds())
            if evaluate:
                self.save_last(k)
        self.interval_loss[:], self.interval_n = 0.0, 0
        if evaluate:
            self.evaluated_at = self.step
            self.eval_seconds += time.perf_counter() - t_eval
            if self.plan is not None and self.plan.calibrated:
                self.plan.evaluated(time.perf_counter() - t_eval)
        if not evaluate or not rows:
            return
        best = min(rows, key=lambda k: rows[k]["dev_loss"])
        label = ""
        if self.K > 1:
            run_dir = self.logs[best].run_dir
            label = f"best of {len(rows)} ({run_dir.name if run_dir is not None else f'#{best}'}): "
        rate = (self.step - self.start) / max(1e-9, time.perf_counter() - self.t0)
        self.bar.log(rows[best], self.total, rate, label=label)
        for callback in self.callbacks:
            for k, row in rows.items():
                callback({**row, "member": int(k)})

    def save_last(self, k: int) -> None:
        if self.logs[k].run_dir is None and dist.world() is None:
            return
        state = {**self.engine.member_state(k), "rng.batch": self.batches.state(k, self.step)}
        state = dist.gather_rank_state(state, self.step)  # [dist] every rank's random state, for rank 0 to save
        self.logs[k].save_last(self.step, state, self.seconds(), self.engine.name)

    def follow_plan(self) -> bool:
        """A budget run, before each step: the thread trial, then (re)planning the steps from the
        time they take, as budget.Plan says. True when the budget is spent."""
        used = time.perf_counter() - self.t0
        if self.trial is not None and not self.trial.done:
            threads = self.trial.tick(self.t0 + used)
            if threads is not None:
                set_threads(threads)
                if self.trial.done:  # the plan times the steps from here, on these threads
                    self.plan.restart_timing(self.step, used - self.eval_seconds)
        if self.plan.due(self.step, used) and (self.trial is None or self.trial.done):
            self.plan.replan(self.step, used, used - self.eval_seconds)
            self.total, self.eval_every = self.plan.total, self.plan.eval_every
            self.log_every = max(1, min(self.eval_every, self.total // 2000))
            self.bar.retotal(self.total)
        return self.plan.over(used)

    def stop_all(self, how: str) -> None:
        self.interrupted_by = how
        for k in np.flatnonzero(self.active):
            self.status[k] = "interrupted"
            self.messages[k] = f"interrupted at step {self.step}; progress saved"
            self.save_last(k)
            if self.logs[k].run_dir is not None:
                self.messages[k] += (f". Continue with: makemore train --resume {self.logs[k].run_dir}"
                                     f"{dist.resume_flags()}")

    def finish(self) -> list[TrainResult]:
        """Each member's final figures and summary.json; its model freed of the engine's buffers."""
        run_seconds = time.perf_counter() - self.t0
        shared = {"engine": self.engine.name, "device": self.setup.device, "precision": self.engine.precision,
                  "setup": self.setup.summary(), **({"members": self.K} if self.K > 1 else {}),
                  **({"cuda_graph": getattr(self.engine, "captured", None) is not None} if self.setup.cuda_graphs else {}),
                  **(self.plan.summary() if self.plan else {}),
                    **(self.trial.summary() if self.trial is not None and self.trial.done else {}), **dist.summary(),
                  **self.extra}
        final_examples = 0  # a budget run's final figures over subsets where the whole splits take too long
        if self.plan is not None:
            whole = min(len(self.corpus.encoded("train")), FINAL_TRAIN_EXAMPLES) + len(self.dev_ex)
            final_examples = self.plan.final_examples(len(self.dev_pos), whole)
        results = []
        for k, (model, log, cfg) in enumerate(zip(self.members, self.logs, self.cfgs)):
            done = self.step if self.status[k] != "diverged" else self.last_step[k]
            log.flush()
            summary = log.finish(self.corpus, {
                "steps": done, "planned_steps": self.total, "seconds": round(self.elapsed + run_seconds, 3),
                "steps_per_second": round((done - self.start) / max(run_seconds, 1e-9), 1),
                "status": self.status[k], **shared}, self.progress, cfg.final_examples or final_examples)
            with torch.no_grad():
                for p in model.parameters():
                    p.data = p.data.clone()  # its own storage, free of the engine's buffers
            results.append(TrainResult(model, self.status[k], summary, log.run_dir, self.messages[k], log.history,
                                       self.interrupted_by, log.dev_log_probs, log.dev_positions))
        return results
