"""What `makemore train` does, as one library function that the CLI and a notebook both call:

    import makemore as mm
    corpus = mm.load_corpus("names")
    result = mm.train(corpus, budget=60, out="runs/b60")     # = makemore train --data names --budget 60

A run's configs come from a preset, a model's own recipe, or, for a time budget with neither,
the best recipe known for that budget (recipes.py); settings given override them
(config.make_configs). A budget run with no preset (a recipe, or a model's own preset where it
has no recipe) also counts a Kneser-Ney model inside its budget (how long that takes is measured
on this data: baselines.estimate_fit_seconds), hands it to its neural model as the teacher a recipe
asks for (teacher.py), and mixes the two after training (mixture.py, Bengio et al. 2003, section
4), so that its result is never worse than counting. Where counting would take more than
MIX_SHARE of the budget, the model trains alone, and the run says so. The count model may be the
learned interpolation of the counts (interpolation.py), trained on a core of its own while the
neural model trains (learns_apart), or on a big list with no spare core before it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from . import distributed as dist
from . import mixture
from .config import make_configs, read_settings
from .data import Corpus
from .devices import usable_cores
from .ensembles import EnsembleResult, side_by_side, train_ensemble
from .errors import UserError
from .loop import TrainResult
from .models import ModelConfig
from .interpolation import InterpolatedCounts
from .baselines import estimate_fit_seconds
from .ngram import NGramModel
from .recipes import MIX_CONTEXT, budget_configs, choose
from .runs import load_any
from .runtime import using_threads
from .teacher import TEACHER_MAX_BYTES, teacher_bytes, teacher_targets
from .training import resume as resume_run, train_members

# Counting the Kneser-Ney model may take up to this share of a budget run's time: on a big list
# at a short budget the count model is most of the result (a neural model trained in the
# seconds counting takes would be far behind it), so the run counts wherever some training
# time is left beside it.
MIX_SHARE = 0.8
# On a list where a run may mix with the learned interpolation of its counts (mixture.learns_counts),
# a budget run trains it beside its neural model on a core of its own (learns_apart) or, where
# there is none and the list is big, for LEARNED_SHARE of its budget before it, at most
# LEARNED_MAX_SECONDS; and mixes with it where it scores better on dev than Kneser-Ney. On
# wordfreq's words 12 s of it beat the best Kneser-Ney model by 0.01 and a minute by 0.02
# (docs/big-lists-studies.md).
LEARNED_SHARE = 0.1
LEARNED_MAX_SECONDS = 120.0


def configure(corpus: Corpus, preset: str | None = None, model: str | None = None, note: Callable[[str], None] = print,
              teacher_allowed: bool = True, **settings) -> tuple[ModelConfig, object, dict | None]:
    """(model config, train config, recipe) of a run on `corpus`: a budget with no preset takes
    the recipe for that budget (recipe None where the model has none: its own preset), any other
    run its preset or model's recipe; `settings` (None = unset) override either."""
    budget = settings.pop("budget", None)
    if budget and preset is None:
        model_cfg, train_cfg, recipe = budget_configs(budget, corpus.vocab.size, len(corpus.encoded("train")), model,
                                                      teacher_allowed=teacher_allowed,
                                                      for_device=recipe_device(settings.get("device")), **settings)
        if recipe is None:
            note(f"note: no time-budget recipe is known for --model {model_cfg.name}: its own preset, with the steps "
                 f"planned for {budget:g} s")
        else:
            reached = "not measured yet" if recipe.get("dev_loss") is None else f"dev {recipe['dev_loss']:.4f}"
            note(f"note: the recipe for {recipe['budget']:g} s (--model {recipe['model']}: {reached} "
                 f"on {recipe.get('data', 'names')} in {recipe['budget']:g} s on "
                 f"{recipe.get('machine') or 'the tuning machine'}, {recipe.get('date') or 'undated'}); steps planned "
                 f"for {budget:g} s here")
        return replace(model_cfg, labels=len(corpus.labels)), train_cfg, recipe
    model_cfg, train_cfg = make_configs(preset, model, vocab_size=corpus.vocab.size, labels=len(corpus.labels),
                                        budget=budget, **settings)
    return model_cfg, train_cfg, None


def recipe_device(device: str | None) -> str:
    """Which device's recipes a run takes: the GPU's where it will likely train there (asked
    for, or `auto` with one present: the trial then picks it for a model sized for a GPU)."""
    from .devices import cuda_available

    return "cuda" if (device or "auto") in ("auto", "cuda") and cuda_available() else "cpu"


def allows_teacher(train_examples: int, vocab_size: int, counted: bool) -> bool:
    """Whether a budget run's recipe gets its teacher: the count model was counted in time, and
    its distributions for every training example fit in memory (teacher.TEACHER_MAX_BYTES)."""
    return counted and teacher_bytes(train_examples, vocab_size) <= TEACHER_MAX_BYTES


def count_inside_budget(corpus: Corpus, budget: float, note: Callable[[str], None], learn: bool = True):
    """(count model, seconds it took) counted for a budget run, or None where counting would
    take more than MIX_SHARE of the budget (measured on a sample). The model has MIX_CONTEXT
    characters of context, or up to MAX_MIX_CONTEXT where more scores better on dev
    (mixture.mixing_model): on names 5 is best, on wordfreq's words 7 (2.2267 against 2.2510).
    With `learn`, the learned interpolation of its counts is trained here too (LEARNED_SHARE)
    where the list allows; without, the count model is Kneser-Ney (its learned interpolation
    trains beside the neural model instead: learns_apart)."""
    orders = mixture.mixing_orders(corpus)
    if corpus.labels:  # counted twice: every label's items alone, and all of them together
        estimate = 2 * estimate_fit_seconds(corpus, MIX_CONTEXT)
    else:
        estimate = estimate_fit_seconds(corpus, orders[-1])
        if estimate > MIX_SHARE * budget:
            orders, estimate = [MIX_CONTEXT], estimate_fit_seconds(corpus, MIX_CONTEXT)
    if estimate > MIX_SHARE * budget:
        note(f"note: counting a Kneser-Ney model of {MIX_CONTEXT} characters would take about {estimate:.1f} s on "
             f"this data, more than {MIX_SHARE:.0%} of {budget:g} s: the model is trained alone")
        return None
    learned_seconds = learning_seconds(corpus, budget, estimate) if learn else None
    started = time.perf_counter()
    ngram = mixture.mixing_model(corpus, orders, learned_seconds)
    return ngram, time.perf_counter() - started


def learning_seconds(corpus: Corpus, budget: float, count_estimate: float) -> float | None:
    """Seconds of a budget run for the learned interpolation of its counts, or None where the
    list is too small (or labelled) or counting leaves no room for it (LEARNED_SHARE)."""
    if not mixture.learns_counts(corpus):
        return None
    seconds = min(LEARNED_SHARE * budget, LEARNED_MAX_SECONDS)
    return seconds if count_estimate + seconds <= MIX_SHARE * budget else None


def learns_apart(corpus: Corpus, seeds: int, threads: int | None) -> bool:
    """Whether a budget run trains the learned interpolation of its counts in a process of its
    own beside its neural model (mixture.learn_apart), for all of the model's training time (at
    most interpolation.MAX_PASSES) rather than LEARNED_SHARE of the budget before it: on a list
    where it may mix with it so (mixture.learns_counts, beside), with one seed (seeds side by side
    take every core), on a machine with a core the model's step leaves free (its `threads`: 0 or
    None is all but that one).
    On wordfreq's words the model's step runs fastest on one thread (budget.ThreadTrial), so
    the second core idled."""
    cores = usable_cores()
    return (mixture.learns_counts(corpus, beside=True) and seeds == 1 and cores >= 2 and (threads or 0) < cores
            and dist.world() is None)


def train(corpus: Corpus, model_cfg: ModelConfig | None = None, train_cfg=None, out: str | Path | None = None, *,
          preset: str | None = None, model: str | None = None, seeds: int = 1, mix: bool | None = None,
          progress: bool | None = None, callbacks: tuple = (), note: Callable[[str], None] | None = None,
          processes: bool | None = None, **settings) -> TrainResult | EnsembleResult:
    """Train a model on `corpus` as `makemore train` does (the module doc), into the run
    directory `out` if given (a seed ensemble with `seeds` > 1). Either configs (`model_cfg`,
    `train_cfg`), or a `preset`/`model` and settings (`budget=60`, `steps=...`, `hidden=...`).
    `mix` (default: for a budget run with no preset) counts a Kneser-Ney model and mixes it
    in; `note` receives the run's notes (what was chosen and why; default: printed on stderr);
    `processes`, the seeds of an ensemble side by side in a process each (True) or in turn in one
    loop (False; default: side by side where the machine allows, ensembles.side_by_side)."""
    if note is None:
        def note(line: str) -> None:
            if dist.is_writer():
                print(line, file=sys.stderr)
    if not isinstance(corpus, Corpus):
        raise UserError(f"train takes a Corpus, got {corpus!r}: read one with makemore.load_corpus(path or 'names')")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"seeds must be a whole number, at least 1, got {seeds!r}")
    given_by_data = sorted(set(settings) & {"vocab_size", "labels"})
    if given_by_data:
        raise UserError(f"{', '.join(given_by_data)} come{'s' if len(given_by_data) == 1 else ''} from the data "
                        f"(the corpus): drop {', '.join(given_by_data)}")
    settings = read_settings(settings)
    if settings.get("budget") and settings.get("steps") is not None:  # the plan would overrule them unsaid
        raise UserError("give --steps or --budget, not both: a budget run plans its own steps to end its "
                        "schedule inside the budget")
    counted, budget_run, apart = None, False, False
    if model_cfg is not None or train_cfg is not None:
        if model_cfg is None or train_cfg is None or preset or model or settings:
            raise UserError("give both configs (model_cfg, train_cfg), or a preset/model and settings, not both")
        if corpus.labels and not model_cfg.labels:  # the data decides, as it does the vocabulary
            model_cfg = replace(model_cfg, labels=len(corpus.labels))
        recipe = None
    else:
        budget = settings.get("budget")
        budget_run = bool(budget) and preset is None and dist.world() is None
        # counted for the mixture, and for a recipe's teacher where its targets fit in memory (on a big
        # vocabulary they do not: a --no-mix run there spent 8 s of its budget counting for nothing)
        teaches = (budget_run and allows_teacher(len(corpus.encoded("train")), corpus.vocab.size, True)
                   and choose(budget, model, vocab_size=corpus.vocab.size,
                              device=recipe_device(settings.get("device"))) is not None)
        apart = budget_run and mix is not False and learns_apart(corpus, seeds, settings.get("threads"))
        if budget_run and (mix is not False or teaches):
            counted = count_inside_budget(corpus, budget, note, learn=not apart)
        allowed = allows_teacher(len(corpus.encoded("train")), corpus.vocab.size, counted is not None)
        model_cfg, train_cfg, recipe = configure(corpus, preset, model, note, teacher_allowed=allowed, **settings)
        if budget_run and mix is None:  # counted above, or too slow to count inside the budget
            mix = counted is not None
    if mix and counted is None and not budget_run:  # asked to mix a run of a preset or configs
        counted = (count_inside_budget(corpus, train_cfg.budget, note) if train_cfg.budget
                   else _timed(lambda: mixture.mixing_model(corpus)))
    extra: dict = {"recipe": recipe} if recipe else {}
    if mix and counted is not None and out is not None:  # a run stopped before its mixture gets it on --resume
        extra["mixes"] = True
    ngram = counted[0] if counted is not None else None
    teacher = None
    if counted is not None:
        extra["count_seconds"] = counted[1]
        if train_cfg.budget:
            extra["budget_requested"] = train_cfg.budget
        train_cfg = _spend(train_cfg, counted[1])
        if recipe is not None and train_cfg.teacher > 0 and train_cfg.teacher_context == MIX_CONTEXT:
            train_cfg = replace(train_cfg, teacher_context=ngram.context)  # a recipe's teacher: the mixture's model
        if train_cfg.teacher > 0 and train_cfg.teacher_context == ngram.context:  # the same model teaches
            teacher, extra["teacher_seconds"] = _timed(lambda: teacher_targets(ngram, corpus.encoded("train")))
            train_cfg = _spend(train_cfg, extra["teacher_seconds"])
    if corpus.vocab.boundary != ".":
        note(f"note: the data uses '.', so the boundary token is {corpus.vocab.boundary!r}")
    learner = None
    if apart and counted is not None and isinstance(ngram, NGramModel):
        learner = mixture.learn_apart(corpus, ngram, train_cfg.budget)
        # the learner's job holds the counts: this process reads them back after training, and
        # meanwhile leaves their memory to the model and the learner
        kneser_ney, count_seconds = (ngram.context, ngram.smoothing, ngram.method), counted[1]
        counted = ngram = None
    result = None
    try:
        if seeds > 1:
            if dist.world() is not None:
                raise UserError("--seeds K is not supported with several workers yet; train the seeds as separate "
                                "runs")
            result = train_ensemble(corpus, model_cfg, train_cfg, seeds, out, progress, extra_summary=extra,
                                    teacher=teacher, processes=processes)
        else:
            # the learner has a core of its own: the model's thread trial chooses among the others
            with using_threads(usable_cores() - 1 if learner is not None and not train_cfg.threads else 0):
                result = train_members(corpus, model_cfg, [train_cfg], [out], progress, callbacks,
                                       extra_summary=extra, teacher=teacher)[0]
    finally:
        if learner is not None and (result is None or result.status != "completed" or not mix):
            learner.cancel()
    if (ngram is not None or learner is not None) and mix and result.status == "completed":
        if learner is not None:
            ngram = mixture.apart_count_model(corpus, learner, *kneser_ney, note)
        else:
            count_seconds = counted[1]
        attach_result(result, corpus, ngram, count_seconds, learned_apart=learner is not None)
    if budget_run and seeds == 1 and result.status == "completed" and learner is None:  # else the learner had it
        spare_seeds(result, train_cfg, note)
    return result


def spare_seeds(result: TrainResult, train_cfg, note: Callable[[str], None]) -> None:
    """Say so where a budget run left cores idle: its step ran fastest on fewer threads than the
    machine has (budget.ThreadTrial), and seeds side by side would have used the rest in the
    same time (ensembles.py)."""
    threads = result.summary.get("threads") or train_cfg.threads or usable_cores()
    seeds = usable_cores() // max(1, threads)
    if seeds > 1 and side_by_side(seeds, replace(train_cfg, threads=threads)):
        note(f"note: the run trained on {threads} of this machine's {usable_cores()} cores; --seeds {seeds} would "
             f"train {seeds} seeds side by side in the same time, and their ensemble scores better (docs/budgets.md)")


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def _spend(train_cfg, seconds: float):
    """The train config with `seconds` of its budget spent (before training: counting, a teacher)."""
    return replace(train_cfg, budget=max(train_cfg.budget - seconds, 1e-3)) if train_cfg.budget else train_cfg


def attach_result(result: TrainResult | EnsembleResult, corpus: Corpus, ngram, count_seconds: float | None,
                  learned_apart: bool = False) -> None:
    """The mixture of a finished run with its count model: kept in its run directory (mixture.attach)
    or, without one, in the result's summary."""
    dev_log_probs = positions = None
    if isinstance(result, TrainResult):  # its final evaluation's of the dev targets (all, or a budget run's subset)
        dev_log_probs, positions = result.dev_log_probs, result.dev_positions
    if result.run_dir is not None:
        fitted = mixture.attach(load_any(result.run_dir), ngram, count_seconds=count_seconds,
                                model_log_probs=dev_log_probs, positions=positions, learned_apart=learned_apart)
    else:
        from .predict import ensemble_predictor, model_predictor

        models = [r.model for r in result.results] if isinstance(result, EnsembleResult) else [result.model]
        predictor = model_predictor(models[0]) if len(models) == 1 else ensemble_predictor(models)
        _, fitted = mixture.fit_mixture(predictor, corpus.splits["train"], corpus.splits["dev"], corpus.vocab,
                                        ngram.context, ngram=ngram, model_log_probs=dev_log_probs,
                                        positions=positions)
        fitted["count_seconds"] = count_seconds
        if isinstance(ngram, InterpolatedCounts):
            fitted.update(learned_steps=ngram.fit_steps, learned_apart=learned_apart)
    if isinstance(result, TrainResult):
        result.summary["mix"] = fitted
        result.summary["result"] = {"predictor": fitted["result"], "dev_loss": mixture.result_loss(fitted)}
    else:
        result.mix = fitted


def resume(run_dir: str | Path, steps: int | None = None, progress: bool | None = None,
           callbacks: tuple = (), threads: int | None = None) -> TrainResult:
    """Continue RUN from its last checkpoint (training.resume: `steps`, `threads`); a run that
    had a mixture fitted gets it fitted again to the model it ends with."""
    result = resume_run(run_dir, steps, progress, callbacks, threads)
    if result.status == "completed" and dist.is_writer():
        run = load_any(run_dir)
        from .rundir import read_mixture

        fitted = read_mixture(run_dir)
        if fitted is not None:  # its count model, kept (or counted again), mixed with the longer-trained model
            ngram = mixture.kept_count_model(run, int(fitted.get("ngram_context", MIX_CONTEXT)), fitted.get("discount"),
                                             fitted.get("count_model", "kneser_ney"))
            fitted = mixture.attach(run, ngram, count_seconds=fitted.get("count_seconds"))
        elif result.summary.get("mixes"):  # stopped before its mixture: fitted now, as `makemore mix RUN` would
            corpus = run.corpus()
            learned = mixture.LEARNED_SECONDS if mixture.learns_counts(corpus) else None
            if progress is not False:
                print("counting its count model" + (f" and training its learned interpolation for {learned:g} s"
                                                    if learned else "") + ", to mix with as the run would have",
                      file=sys.stderr, flush=True)
            fitted = mixture.attach(run, learned_seconds=learned)
        if fitted is not None:
            result.summary["mix"] = fitted
            result.summary["result"] = {"predictor": fitted["result"], "dev_loss": mixture.result_loss(fitted)}
    return result
