"""A worker of a study: it joins (or creates) the study and runs trials until the study has
`--trials` finished ones, each trial one training run of the model.

Every worker runs the same command; the first one creates the study, the others join it
(load_if_exists). Trials are drawn by Optuna's TPE sampler (Bergstra, Bardenet, Bengio and Kégl
2011, "Algorithms for hyper-parameter optimization", NeurIPS), multivariate and with the
constant liar for trials still running in other workers (Ginsbourger, Le Riche and Carraro 2010,
"Kriging is well-suited to parallelize optimization"). Each trial trains one model with
fit.train into OUT/trial-NNNN, reports its dev loss at every evaluation, and is pruned
(stopped, its run directory kept) when it falls behind the median of earlier trials at the same
point (Optuna's MedianPruner: the median stopping rule of Golovin et al. 2017, "Google Vizier:
a service for black-box optimization", KDD).

`--trials N` is the number of trials the *study* should finish (COMPLETE or PRUNED), whatever
the number of workers: under a lock held across workers (storage._Lock), a worker counts the
finished and running trials and, if they are fewer than N, creates its next trial (RUNNING, with
its first heartbeat: _claim) and then runs exactly that trial with Optuna's ask-and-tell
interface (_run_trial). So workers started at once never run more than N trials, and no trial is
left that nobody runs. (Reserving a WAITING trial and letting study.optimize claim "a" WAITING
trial did leave such trials: a worker could claim another's reservation, or create a fresh trial
when its list of WAITING ones was stale, and its own reservation then stalled every worker until
it was failed; issue 8.) A worker killed mid-trial stops its heartbeats; once the grace period
has passed, another worker marks the trial FAIL, which frees its slot, and runs a replacement.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import models
from ..budget import check_minimum
from ..config import make_configs
from ..errors import UserError
from ..teacher import TEACHER_MAX_BYTES, teacher_bytes
from ..outputs import atomic_write_json, check_not_a_run, check_writable_parent
from .report import _counts, _trial_line
from .space import (DEFAULT_READING, DEFAULT_STEPS, RECIPE_TRY, model_space, preset_params, reading_of, search_space,
                    suggest, trial_settings)
from .storage import (DEFAULT_HEARTBEAT, DEFAULT_STUDY, STUDY_ATTR, _heartbeats, _Lock, _optuna, _storage_errors,
                      check_storage, default_storage, grace_period, open_storage, redact)

# A trial's final train and dev losses (its objective) are over a fixed random subset of this
# many examples of each split (TrainConfig.final_examples): the whole dev split of names, and on
# a list of hundreds of thousands a cost that does not grow with the list. The same subset
# for every trial, so they compare like with like; `train` of the best trial reports the whole split.
TRIAL_FINAL_EXAMPLES = 100_000


@dataclass
class TuneOptions:
    trials: int
    out: Path
    study: str = DEFAULT_STUDY
    storage: str | None = None  # None: sqlite:///OUT/study.db
    steps: int = DEFAULT_STEPS
    timeout: float | None = None  # seconds this worker keeps starting trials
    seed: int = 42  # training seed of every trial; the sampler's is seed + worker index
    threads: int = 1
    heartbeat: int = DEFAULT_HEARTBEAT
    space: dict | None = None  # overrides of the model's ranges (see search_space)
    budget: float | None = None  # seconds: the time objective, the best dev loss a trial reaches in them
    tries: tuple[str, ...] = ()  # presets whose settings are the study's first trials
    model: str = models.DEFAULT_MODEL  # whose settings are searched (its SEARCH_SPACE)

    def validate(self) -> None:
        if self.trials < 1:
            raise UserError(f"trials must be at least 1, got {self.trials}")
        if self.steps < 1:
            raise UserError(f"steps must be at least 1, got {self.steps}")
        if self.timeout is not None and not self.timeout > 0:
            raise UserError(f"timeout must be positive (seconds), got {self.timeout}")
        if self.threads < 0:
            raise UserError(f"threads must be >= 0, got {self.threads}")
        if self.heartbeat < 1:
            raise UserError(f"heartbeat must be at least 1 second, got {self.heartbeat}")
        if not self.study.strip():
            raise UserError("study name must not be empty")
        if self.budget is not None and not self.budget > 0:
            raise UserError(f"budget must be a positive number of seconds, got {self.budget}")
        if self.budget is not None:
            check_minimum(self.budget)
        search_space(self.steps, self.space, self.budget, self.model)  # raises on a bad --space or model
        for preset in self.tries:
            if preset == RECIPE_TRY:
                if not self.budget:
                    raise UserError(f"--try {RECIPE_TRY} (the current time-budget recipe) needs --budget")
                continue
            make_configs(preset, self.model)  # an unknown preset, or another model's, is one error line


def _corpus_digest(words: list[str], split_seed: int) -> str:
    return hashlib.sha256(("\n".join(words) + f"\nsplit_seed={split_seed}").encode()).hexdigest()


def _check_study_attrs(study, wanted: dict) -> None:
    """The first worker records what the study trains on; joining workers must agree."""
    have = study.user_attrs.get(STUDY_ATTR)
    if have is None:
        study.set_user_attr(STUDY_ATTR, wanted)
        return
    names = {"digest": "data (file contents or --split-seed)", "model": "--model", "steps_cap": "--steps",
             "seed": "--seed", "space": "--space (search ranges)", "budget": "--budget",
             "reading": "--min-char-count, --normalize or --units"}
    # studies from before tune searched other models, or recorded how their data was read
    have = {"model": models.DEFAULT_MODEL, "reading": DEFAULT_READING, **have}
    for key, what in names.items():
        if have.get(key) != wanted.get(key):
            shown = have.get("data") if key == "digest" else have.get(key)
            if key == "space" and isinstance(shown, dict) and isinstance(wanted.get(key), dict):
                shown = _space_difference(shown, wanted[key])
            raise UserError(f"study {study.study_name!r} was started with other {what} ({shown}); "
                            f"join it with the same settings, or pick another --study")


def _space_difference(have: dict, wanted: dict) -> str:
    """The search ranges that differ, as --space writes them: 'hidden [64, 1024] here [16, 64]'."""
    def shown(spec) -> str:
        return "not searched" if spec is None else json.dumps(spec[:2] if len(spec) == 3 else spec)
    return "; ".join(f"{name} {shown(have.get(name))} here {shown(wanted.get(name))}"
                     for name in sorted(set(have) | set(wanted)) if have.get(name) != wanted.get(name))


def _check_out_dir(out: Path, study: str, storage: str) -> bool:
    """OUT holds one study's trial directories: refuse to mix two studies' trial-NNNN, and an
    OUT that cannot be a folder we write in. True if OUT is this study's already."""
    marker = out / "tune.json"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    check_not_a_run(out)
    check_writable_parent(out / "tune.json", "--out")
    if marker.is_file():
        try:
            have = json.loads(marker.read_text())
        except (json.JSONDecodeError, OSError):
            have = {}
        if have.get("study") != study or have.get("storage") != redact(storage):
            raise UserError(f"{out} holds the trials of study {have.get('study')!r} in {have.get('storage')}; "
                            f"pick another --out for study {study!r}")
        return True
    return False


@contextlib.contextmanager
def _setting_up(out: Path, database: Path | None):
    """The setup of a worker (OUT, the study's database): if it fails, what it created goes."""
    made_out, made_db = not out.exists(), database is not None and not database.exists()
    try:
        yield
    except BaseException:
        if made_db and database.exists():
            database.unlink()
        if made_out:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _fail_orphans(study, storage, grace: float) -> list[int]:
    """Fail the trials of workers that died where optuna's heartbeat cannot see it: after
    creating their trial and before its first heartbeat (RUNNING, no `worker` attribute; see
    _claim). Failing them frees their slots. Returns the numbers of the trials failed."""
    optuna = _optuna()
    S = optuna.trial.TrialState
    now, failed = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
        started = t.datetime_start.timestamp() if t.datetime_start else now
        if "worker" not in t.user_attrs and now - started > 2 * grace:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                if storage.set_trial_state_values(t._trial_id, state=S.FAIL):
                    failed.append(t.number)
    return failed


def _claim(study, storage, worker_id: str):
    """This worker's next trial, created (or, for one queued with enqueue_trial, taken from
    WAITING) while the caller holds the cross-worker lock. It is RUNNING at once and gets its
    first heartbeat before the `worker` attribute, so a worker dying at any point leaves a
    trial that either _fail_orphans (no `worker`) or fail_stale_trials (heartbeat) fails."""
    with warnings.catch_warnings():  # the heartbeats are ours (_heartbeats), not optimize's
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    trial.set_user_attr("worker", worker_id)
    return trial


def _run_trial(study, storage, trial, objective, heartbeat: float):
    """Run `trial`, the one this worker claimed, to its end with heartbeats, and tell the study
    how it ended, as study.optimize does for a trial it picked itself: COMPLETE with the
    objective's value, PRUNED (value: the last reported one), or FAIL on any error, which is
    raised again. Returns the finished FrozenTrial; raises UpdateFinishedTrialError if another
    worker failed the trial meanwhile (it saw no heartbeat for the grace period)."""
    optuna = _optuna()
    S = optuna.trial.TrialState
    value, state = None, None
    with _heartbeats(storage, trial._trial_id, heartbeat):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            state = S.PRUNED
        except BaseException:
            study.tell(trial, state=S.FAIL, skip_if_finished=True)
            raise
    try:
        return study.tell(trial, value, state=state)
    except ValueError:  # "Cannot tell a FAIL trial": see above
        if storage.get_trial(trial._trial_id).state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial.number} is finished") from None
        raise


def run_study(corpus, data_spec: str, opts: TuneOptions, log: Callable[[str], None] | None = None,
              pruner=None):
    """Join (or create) the study and run trials until it has `opts.trials` finished ones."""
    optuna = _optuna()
    from ..models import count_params
    from ..fit import train

    opts.validate()
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(opts.out)
    url = opts.storage or default_storage(out)
    database = check_storage(url)
    ours = _check_out_dir(out, opts.study, url)
    space = search_space(opts.steps, opts.space, opts.budget, opts.model)
    if teacher_bytes(len(corpus.encoded("train")), corpus.vocab.size) > TEACHER_MAX_BYTES:
        if "teacher" in (opts.space or {}) and space["teacher"][1] > 0:
            raise UserError("--space: this data's teacher would not fit in memory (a Kneser-Ney distribution per "
                            "training example); leave teacher out of the space")
        space.pop("teacher", None)  # one-hot targets only, as a budget run on such data trains
    grace = grace_period(opts.heartbeat)

    def dead(_study, t) -> None:  # called by fail_stale_trials, below
        log(f"trial {t.number}: failed, its worker ({t.user_attrs.get('worker', '?')}) sent no heartbeat "
            f"for {grace} s; its slot is run again")

    wanted = {"version": 1, "model": opts.model, "space": space, "data": data_spec, "source": str(Path(corpus.source).resolve()),
              "digest": _corpus_digest(corpus.words, corpus.seed), "split_seed": corpus.seed,
              "steps_cap": opts.steps, "seed": opts.seed, "fixed": model_space(opts.model)[1], "budget": opts.budget,
              "reading": reading_of(corpus),
              "train_examples": len(corpus.encoded("train")), "vocab_size": corpus.vocab.size,
              **({"labels": list(corpus.labels)} if corpus.labels else {})}
    with _setting_up(out, database):  # nothing is left behind if the storage cannot be used
        lock = _Lock(url, opts.study)
        with lock():
            # With a lock, no other worker is creating the tables now; without one, a race is retried.
            for attempt in range(1 if lock.kind != "none" else 3):
                try:
                    storage = open_storage(url, heartbeat=opts.heartbeat, on_stale=dead)
                    break
                except UserError:
                    if lock.kind != "none" or attempt == 2:
                        raise
                    time.sleep(0.5 + attempt)
            with _storage_errors(url):
                study = optuna.create_study(study_name=opts.study, storage=storage, direction="minimize",
                                            load_if_exists=True)
                _check_study_attrs(study, wanted)
                worker = int(study.user_attrs.get("workers", 0))
                study.set_user_attr("workers", worker + 1)
                if worker == 0:
                    for preset in opts.tries:  # known recipes first: TPE then searches around them
                        study.enqueue_trial(preset_params(preset, space, opts.budget, corpus, opts.model, log),
                                            skip_if_exists=True)
        if not ours:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "tune.json", {"study": opts.study, "storage": redact(url)})
    if lock.kind == "none":
        log(f"note: no cross-worker lock for {redact(url).split(':')[0]} storage; with several workers "
            f"the study may run a few more than {opts.trials} trials")
    sampler_seed = opts.seed + worker
    study.sampler = optuna.samplers.TPESampler(
        seed=sampler_seed, multivariate=True, constant_liar=True,
        n_startup_trials=max(3, min(10, opts.trials // 3)))
    eval_every = max(1, opts.steps // 20)  # the same steps in every trial, so the pruner compares like with like
    # a budget trial reports at 20ths of its budget, not at steps (its steps depend on its speed)
    study.pruner = pruner or optuna.pruners.MedianPruner(
        n_startup_trials=4, n_warmup_steps=max(1, opts.steps // 4) if not opts.budget else 5)
    host = socket.gethostname()
    worker_id = f"{host}:{os.getpid()}"

    def objective(trial) -> float:
        params = suggest(trial, space, opts.model)
        settings = trial_settings(params, opts.seed, opts.budget, opts.model)
        model_cfg, train_cfg = make_configs(None, vocab_size=corpus.vocab.size, labels=len(corpus.labels), **settings,
                                            eval_interval=eval_every, threads=opts.threads, engine="auto",
                                            final_examples=TRIAL_FINAL_EXAMPLES)
        run_dir = out / f"trial-{trial.number:04d}"
        if run_dir.exists():
            raise UserError(f"{run_dir} already exists: it belongs to another study; pick another --out")
        for key, value in {"run_dir": str(run_dir.resolve()), "host": host, "settings": settings,
                           "params": count_params(model_cfg)}.items():
            trial.set_user_attr(key, value)
        last: dict = {}
        reported: set[int] = set()

        def report(row: dict) -> None:
            if row["step"] == 0 or row.get("dev_loss") is None:
                return
            last.update(row)
            at = round(20 * row["seconds"] / opts.budget) if opts.budget else row["step"]
            if at in reported:
                return  # two estimates in one 20th of the budget: the first one stands
            reported.add(at)
            trial.report(row["dev_loss"], at)
            if trial.should_prune():
                raise optuna.TrialPruned(f"dev {row['dev_loss']:.4f} at step {row['step']}")

        def finish(state: str, figures: dict) -> None:
            for key, value in figures.items():
                trial.set_user_attr(key, value)
            atomic_write_json(run_dir / "trial.json", {"study": opts.study, "trial": trial.number, "state": state,
                                                       "settings": settings, **figures})

        try:
            result = train(corpus, model_cfg, train_cfg, out=run_dir, callbacks=(report,), progress=False)
        except optuna.TrialPruned:
            # The run directory stays, as a stopped run: metrics up to here, best and last checkpoints.
            finish("pruned", {"dev_loss": last["dev_loss"], "train_loss": last.get("train_loss"),
                              "seconds": last["seconds"], "steps_done": last["step"]})
            raise
        if result.status == "interrupted":
            raise KeyboardInterrupt
        s = result.summary
        finish(result.status, {"dev_loss": s["dev_loss"], "train_loss": s["train_loss"], "seconds": s["seconds"],
                               "steps_done": s["steps"], "engine": s["engine"], "status": s["status"]})
        return s["dev_loss"]

    start = time.monotonic()
    waiting_said = False
    ran = 0
    while True:
        if opts.timeout is not None and time.monotonic() - start > opts.timeout:
            log(f"timeout: {opts.timeout:g} s passed; this worker stops")
            break
        S = optuna.trial.TrialState
        trial = None
        with _storage_errors(url), lock():
            # Counting and claiming under one lock: no other worker claims in between.
            optuna.storages.fail_stale_trials(study)  # dead workers' trials -> FAIL
            for number in _fail_orphans(study, storage, grace):
                log(f"trial {number}: failed, its worker died before it started; its slot is run again")
            counts = _counts(study)
            if counts[S.FAIL] >= max(3, opts.trials):
                raise UserError(f"study {opts.study!r} has {counts[S.FAIL]} failed trials; "
                                f"see `makemore tune --report --study {opts.study}` and the workers' logs")
            finished = counts[S.COMPLETE] + counts[S.PRUNED]
            if finished + counts[S.RUNNING] < opts.trials:
                trial = _claim(study, storage, worker_id)
        if trial is not None:
            with _storage_errors(url, database_only=True):
                try:
                    log(_trial_line(_run_trial(study, storage, trial, objective, opts.heartbeat)))
                except optuna.exceptions.UpdateFinishedTrialError:
                    # Another worker saw no heartbeat for the grace period (a machine too busy
                    # to send them?), failed the trial and gave its slot to a new one.
                    log(f"trial {trial.number}: failed by another worker, which saw no heartbeat for {grace} s; "
                        f"its result is dropped (a longer --heartbeat avoids this)")
            ran += 1
            waiting_said = False
            continue
        if finished >= opts.trials:
            break  # the study has its trials
        if not waiting_said:
            log(f"waiting: {counts[S.RUNNING]} trial(s) still running in other workers "
                f"(a dead worker's trial is failed and re-run after {grace} s without heartbeat)")
            waiting_said = True
        time.sleep(min(2.0, opts.heartbeat))
    return study, ran
