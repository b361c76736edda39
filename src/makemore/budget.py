"""Training for a time budget: `makemore train --budget 60` plans its steps from the time a step
takes on this machine, so that the run, its learning-rate schedule completed, fits the budget.

A user thinks in minutes, not in steps; the same recipe takes 3x longer on a laptop than on a
workstation. So a budget run first takes a few steps on the provisional schedule (the cosine
schedule barely moves in them), measures how long a step and a dev evaluation take, and sets
the number of steps that fills the budget; it measures again at every evaluation and moves the
end of the schedule if the machine got slower or faster. The budget covers what summary.json
calls `seconds`: the training loop, its dev estimates included; the final figures (the train
loss over up to 250,000 training examples, the dev loss over the whole dev split) come after it
and take at most FINAL_SHARE of the budget: where they would take more (a slow model on a big
list), each is computed over a fixed subset of as many examples as fit, and the summary says how
many (`makemore eval RUN` gives the whole split). As a last guard the loop stops at the budget
even if the plan ran late (the schedule then does not complete; the summary says so).

How many threads a step should use depends on the model: with torch's default threads on CPU a
budget run first times a few steps on one thread and a few on all of them, and keeps the faster
(ThreadTrial): small products run faster on one thread (OpenMP's passive wait wakes the other
thread for every one), large ones on all (docs/budgets.md has the measurements).
"""

from __future__ import annotations

import math
import re
import statistics

from .errors import UserError

# Dev estimates take at most this share of the budget: fewer of them when one is slow (a big
# vocabulary, a wide model), up to MAX_EVALS.
EVAL_SHARE = 0.1
MAX_EVALS = 20
# The first measurement of a step's time: after this share of the budget (and at least
# CALIBRATION_STEPS steps), the plan is made; it is remade at every evaluation.
CALIBRATION_SHARE = 0.03
CALIBRATION_STEPS = 10
# After the first plan, the plan is remade every REPLAN_SHARE of the budget; it moves the end
# of the schedule only if that changes the steps left by more than REPLAN_TOLERANCE.
REPLAN_SHARE = 0.02
REPLAN_TOLERANCE = 0.02
# The plan aims to end at this share of the budget: the margin absorbs the noise of the last
# steps' timing, so that the last guard (the budget itself) does not cut the schedule short.
TARGET_SHARE = 0.97
# Each thread count is timed for this share of the budget (and at least TRIAL_STEPS steps, the
# first of which, after the switch, is not counted).
TRIAL_SHARE = 0.01
TRIAL_STEPS = 6
# The final figures after the budget take at most this share of it (module doc): a GRU's
# budget-30 run on the wordfreq list spent 61 s on them over the whole splits.
FINAL_SHARE = 0.1
# Below a second no machine trains anything worth keeping, and whether one dev evaluation fits
# would depend on the machine's speed (a 0.01-s budget passed the check on a fast CI machine and
# then wrote a run of zero steps): such a budget is refused before anything is done.
MIN_BUDGET = 1.0


def parse_seconds(text: str | float | int) -> float:
    """'90', '90s', '2m', '1h', '1m30s' -> seconds; 0 means no budget (train --steps); a bad or
    negative value is a UserError."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        spec = str(text).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", spec)
        if not spec or parts is None or not any(g is not None for g in parts.groups()):
            raise UserError(f"budget {text!r} is not a duration: give seconds (90), or 2m, 1h, 1m30s")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        value = 3600 * h + 60 * m + s
    if not (math.isfinite(value) and value >= 0):
        raise UserError(f"budget must be a duration of 0 (train --steps) or more seconds, got {text!r}")
    return value


def check_minimum(budget: float) -> None:
    """A positive budget under MIN_BUDGET is one error line."""
    if 0 < budget < MIN_BUDGET:
        raise UserError(f"a budget of {budget:g} s is too small: give at least {MIN_BUDGET:g} s")


class Plan:
    """The steps and evaluations of a budget run, kept up to date as it trains.

    `total` is the planned number of steps (the end of the lr schedule), `eval_every` the steps
    between dev estimates. The loop tells the plan how long things took (`evaluated`,
    `stepped`) and asks it `replan` at its checkpoints.
    """

    def __init__(self, budget: float, provisional_steps: int, start_step: int = 0):
        self.budget = budget
        self.total = provisional_steps
        self.eval_every = provisional_steps  # no dev estimate before the plan sets their interval
        self.start_step = start_step
        self.eval_times: list[float] = []  # of every dev estimate so far, with the checkpoint it saves
        self.estimate_times: list[float] = []  # of the estimates alone: what the final figures cost
        self.step_seconds: float | None = None
        self.calibrated = False
        self.evals = MAX_EVALS
        self.stopped_early = False
        self.planned_at = 0.0  # budget seconds used at the last plan
        self.timed = (start_step, 0.0)  # (step, seconds spent on steps) at the last plan

    def evaluated(self, seconds: float) -> None:
        """The time of one dev estimate (of all members)."""
        self.eval_times.append(seconds)

    def estimated(self, seconds: float) -> None:
        """The time of one dev estimate's scoring alone (of all members), without the checkpoint
        written with it: a 34M-parameter model's write took most of its evaluations."""
        self.estimate_times.append(seconds)

    @property
    def eval_seconds(self) -> float | None:
        """What the plan charges for a dev estimate. Every estimate reads the same subset of dev,
        so they take about the same time: the lower median of those measured, so that one
        estimate slowed by a stall does not stand for all those left. (It did with a running
        mean: the plan shrank the steps left for the evaluations it expected, no later
        evaluation came to correct the figure, and the run ended at 45-75% of its budget;
        tests/test_budget.py, on a simulated clock.)"""
        return statistics.median_low(self.eval_times) if self.eval_times else None

    def check_feasible(self) -> None:
        """After the first evaluation: a budget that cannot hold two of them (the first and the
        last) and some training between is too small to plan."""
        need = 2 * (self.eval_seconds or 0.0)
        if self.budget < 1.5 * need:
            raise UserError(f"a budget of {self.budget:g} s is too small here: one dev evaluation alone takes "
                            f"{self.eval_seconds:.2f} s; give at least {max(1, math.ceil(1.5 * need))} s "
                            f"(or fewer --eval-examples)")

    def restart_timing(self, step: int, train_seconds: float) -> None:
        """The steps so far ran under other conditions (a thread trial): time from here."""
        self.timed = (step, train_seconds)

    def calibrating(self, step: int, used: float) -> bool:
        # A model fast for its budget could run its whole provisional schedule inside
        # CALIBRATION_SHARE of the budget (the `fast` preset: 5,500 steps in 2.5 s of 300): the
        # plan is then made after an eighth of the provisional steps at the latest, where the
        # cosine schedule has moved by 4%.
        done = step - self.start_step
        return not self.calibrated and (step - self.timed[0] < CALIBRATION_STEPS or (
            used < CALIBRATION_SHARE * self.budget and done < (self.total - self.start_step) // 8))

    def due(self, step: int, used: float) -> bool:
        """Whether the loop should call `replan` now: once the first steps are timed, then every
        REPLAN_SHARE of the budget."""
        if not self.calibrated:
            return not self.calibrating(step, used)
        return used - self.planned_at >= REPLAN_SHARE * self.budget

    def evals_between(self, step: int, total: int) -> int:
        """Dev estimates the loop makes after `step` up to `total`: at every multiple of
        eval_every, and at the last step."""
        multiples = total // self.eval_every - step // self.eval_every
        return multiples + (0 if total % self.eval_every == 0 else 1)

    def replan(self, step: int, used: float, train_seconds: float) -> None:
        """Set `total` so that the remaining steps and evaluations end at TARGET_SHARE of the
        budget, given the time used so far and the time spent on steps (evaluations not
        counted). A step's time is that of the steps since the last plan, averaged with the
        previous figure: recent enough to follow a machine that slows down or speeds up."""
        last_step, last_seconds = self.timed
        recent = (train_seconds - last_seconds) / max(1, step - last_step)
        step_seconds = recent if self.step_seconds is None else 0.5 * (recent + self.step_seconds)
        self.step_seconds, self.planned_at, self.timed = step_seconds, used, (step, train_seconds)
        eval_seconds = self.eval_seconds or 0.0
        target = TARGET_SHARE * self.budget
        if not self.calibrated:
            # as many dev estimates as fit in EVAL_SHARE of the budget, at most MAX_EVALS
            self.evals = max(1, min(MAX_EVALS, int(EVAL_SHARE * self.budget / max(eval_seconds, 1e-9))))
            steps_left = max(1, int((target - used - self.evals * eval_seconds) / max(step_seconds, 1e-9)))
            self.total = step + steps_left
            self.eval_every = max(1, (self.total - self.start_step) // self.evals)
            self.calibrated = True
            return
        left = target - used
        steps_left = max(1, int(left / max(step_seconds, 1e-9)))
        for _ in range(3):  # the evaluations left depend on the steps left: settle both
            evals_left = self.evals_between(step, step + steps_left)
            steps_left = max(1, int((left - evals_left * eval_seconds) / max(step_seconds, 1e-9)))
        # a moment's stall (another process, the OS) must not end the schedule: the steps left
        # shrink by at most half per plan, so a slowdown that lasts is followed over a few plans
        steps_left = max(steps_left, (self.total - step) // 2)
        if abs(step + steps_left - self.total) > REPLAN_TOLERANCE * max(1, self.total - step):
            self.total = step + steps_left

    def over(self, used: float) -> bool:
        """The last guard: the budget is spent (the schedule ends early)."""
        if used >= self.budget:
            self.stopped_early = True
            return True
        return False

    def final_examples(self, estimate_examples: int, final_examples: int) -> int:
        """How many examples each of the final figures may read: 0 for all of them, where
        `final_examples` (train and dev together) cost at most FINAL_SHARE of the budget at the
        measured cost of a dev estimate over `estimate_examples`; else as many each as fit in
        that share, and never fewer than an estimate reads."""
        if not self.estimate_times or estimate_examples <= 0:
            return 0
        per_example = statistics.median_low(self.estimate_times) / estimate_examples
        allowed = FINAL_SHARE * self.budget
        if final_examples * per_example <= allowed:
            return 0
        return max(estimate_examples, int(allowed / per_example / 2))

    def summary(self) -> dict:
        return {"budget": self.budget, "planned_steps": self.total,
                "budget_stopped_early": self.stopped_early}


class ThreadTrial:
    """The thread count of a budget run: one thread, then `threads`, each for TRIAL_SHARE of the
    budget; the faster median step wins. The loop calls `tick` before every step and sets the
    thread count it returns (None: leave it)."""

    def __init__(self, threads: int, budget: float):
        self.options = [1, threads]
        self.phase_seconds = TRIAL_SHARE * budget
        self.phase, self.phase_start, self.last = 0, None, None
        self.step_times: list[list[float]] = [[], []]
        self.chosen: int | None = None
        self.medians: list[float] = []  # seconds per step on each option, once chosen

    @property
    def done(self) -> bool:
        return self.chosen is not None

    def tick(self, now: float) -> int | None:
        if self.done:
            return None
        if self.phase_start is None:  # the first step: start on one thread
            self.phase_start = self.last = now
            return self.options[0]
        times = self.step_times[self.phase]
        times.append(now - self.last)
        self.last = now
        if len(times) < TRIAL_STEPS or now - self.phase_start < self.phase_seconds:
            return None
        if self.phase == 0:
            self.phase, self.phase_start = 1, now
            return self.options[1]
        self.medians = [statistics.median(t[1:]) for t in self.step_times]  # t[0]: the step after a switch
        self.chosen = self.options[int(self.medians[1] < self.medians[0])]
        return self.chosen

    def summary(self) -> dict:
        return {"threads": self.chosen, "thread_trial_step_ms": {
            str(n): round(1000 * m, 3) for n, m in zip(self.options, self.medians)}}
