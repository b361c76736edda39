"""The neural model mixed with a count model (Kneser-Ney, or the learned interpolation of its
counts, interpolation.py), and which of them is a run's result.

Bengio et al. (2003), section 4: the neural network and a count model make different errors, so
their mixture beats both,

    P(c | h) = w * P_model(c | h) + (1 - w) * P_ngram(c | h),

with w in [0, 1] fitted on the dev split. A budget run counts the Kneser-Ney model inside its
budget and mixes (training.py), and `makemore mix RUN` does it for any run; either way the
fitted mixture is kept as RUN/mix.json (rundir.py) and its count model's counts beside it
(RUN/counts.safetensors), so that sampling five words from a run on a list of 800,000 reads
them rather than counting the whole training split again.

The mixture's dev loss is at most either part's (w = 1 is the model, w = 0 the count model), so
a run is never worse than counting: where the neural model adds next to nothing (the mixture
gains less than MIN_GAIN over the count model alone: a short budget on a big list) the run's
*result* is the count model, and says so. eval, sample, score and serve use a run's result
(`run_predictor`), unless asked for the neural model alone or the mixture.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from . import rundir
from .counts import NGramCounts
from .data import Examples, Vocab
from .errors import UserError
from .interpolation import Apart, InterpolatedCounts, fit_apart
from .labels import LabelledNGram, count_model, fit_on_dev
from .baselines import fit_best_order
from .ngram import KNESER_NEY, NGramModel, ngram_predictor
from .predict import chunk_log_probs, ensemble_predictor, make_predictor, model_predictor, target_log_probs
from .recipes import MAX_MIX_CONTEXT, MIX_CONTEXT

# What a run's predictions come from: its neural model (or ensemble), the mixture, or the count model.
RESULTS = ("model", "mixture", "ngram")
# Below this gain in dev nats per character, mixing the neural model in is not worth its cost:
# the count model alone is the run's result.
MIN_GAIN = 1e-3
# The count model a run mixes with may be the learned interpolation of its counts
# (interpolation.py), on an unlabelled list. A budget run trains it beside its neural model, on a
# core the model's step leaves idle (fit.learns_apart), from LEARNED_BESIDE_MIN_EXAMPLES training
# examples: there it costs the model no time, and on names.txt (182,441, the smallest list it was
# measured on) the 60-s budget run's result went from 1.9235 to 1.9141 (medians of 3,
# scripts/budget_runs.py, docs/budgets.md). Where it would take time from the model (trained
# before it, with no core to spare) and for `makemore mix` by default (LEARNED_SECONDS of
# training), only from LEARNED_MIN_EXAMPLES: on wordfreq's words a minute of it beat the best
# Kneser-Ney model by 0.02 (docs/big-lists-studies.md), where names' short budgets have no minute
# to give.
LEARNED_BESIDE_MIN_EXAMPLES = 100_000
LEARNED_MIN_EXAMPLES = 1_000_000
LEARNED_SECONDS = 60.0


def mixture_predictor(model, ngram, weight: float):
    """P(c | h) = weight * P_model(c | h) + (1 - weight) * P_ngram(c | h), in log space."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"mixture weight must be in [0, 1], got {weight}")
    log_w, log_1mw = math.log(weight) if weight > 0 else -math.inf, math.log1p(-weight) if weight < 1 else -math.inf

    def predict(ctx: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(model(ctx) + log_w, ngram(ctx).to(ctx.device) + log_1mw)

    def of_targets(ctx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # each part by its fastest way (an adaptive softmax's cluster, the counts of the target):
        # scoring a split of a big vocabulary never builds either part's V-wide rows
        return torch.logaddexp(chunk_log_probs(model, ctx, y) + log_w, chunk_log_probs(ngram, ctx, y).to(ctx.device)
                               + log_1mw)

    predict.target_log_probs = of_targets
    return make_predictor(predict, max(model.context_size, ngram.context_size), model.device, model.vocab_size,
                          model.labels)


def tune_mixture_weight(model, ngram, words: list[str], vocab: Vocab, model_log_probs: torch.Tensor | None = None,
                        positions: np.ndarray | None = None) -> dict:
    """The weight in [0, 1] that minimises the mixture's NLL on `words` (the dev split), or on
    its examples at `positions` (a budget run's final figures over a subset; the result then
    says how many in `dev_examples`).

    `ngram` is a predictor, or an NGramModel: then its log-probs of the targets are read off
    its counts directly, without its distributions over all V characters. `model_log_probs`:
    the model's of the same targets where they are known already (a run's final evaluation,
    TrainResult.dev_log_probs). The mixture's NLL is convex in the weight, so a fine grid finds
    its minimum to 1e-3.
    """
    examples = Examples.from_words(words, vocab)
    n = len(examples) if positions is None else len(positions)
    if model_log_probs is not None and model_log_probs.shape != (n,):
        raise ValueError(f"model_log_probs has shape {tuple(model_log_probs.shape)}, expected ({n},)")
    a = target_log_probs(model, examples, positions) if model_log_probs is None else model_log_probs.double()
    if isinstance(ngram, (NGramModel, LabelledNGram, InterpolatedCounts)):  # read off the counts: the whole split costs little
        b = ngram.target_log_probs(examples)
        b = b if positions is None else b[torch.from_numpy(positions)]
    else:
        b = target_log_probs(ngram, examples, positions)
    weights = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    nll = torch.empty_like(weights)
    # a few weights at a time: (weights, examples) of float64 for all 1001 at once would be
    # gigabytes for the dev split of a big list
    step = max(1, (1 << 22) // max(1, a.shape[0]))
    with torch.no_grad():
        for i in range(0, weights.shape[0], step):
            log_w = torch.log(weights[i:i + step])[:, None]
            log_1mw = torch.log1p(-weights[i:i + step])[:, None]
            nll[i:i + step] = -torch.logaddexp(a[None, :] + log_w, b[None, :] + log_1mw).mean(dim=1)
    best = int(torch.argmin(nll))
    # + 0.0: where every target is certain a loss is -0.0, which prints as "-0.0000"
    return {"weight": float(weights[best]), "mlp_dev_loss": float(-a.mean()) + 0.0,
            "ngram_dev_loss": float(-b.mean()) + 0.0, "mix_dev_loss": float(nll[best]) + 0.0,
            **({"dev_examples": n} if n < len(examples) else {})}


def result_of(fitted: dict) -> str:
    """Which predictor a fitted mixture makes the run's result (see the module doc)."""
    if fitted["weight"] >= 1.0:
        return "model"
    if fitted["mix_dev_loss"] > fitted["ngram_dev_loss"] - MIN_GAIN:
        return "ngram"
    return "mixture"


def result_loss(fitted: dict) -> float:
    return {"model": fitted["mlp_dev_loss"], "ngram": fitted["ngram_dev_loss"],
            "mixture": fitted["mix_dev_loss"]}[result_of(fitted)]


def fit_mixture(model, train_words: list[str], dev_words: list[str], vocab: Vocab, context: int,
                ngram: NGramModel | None = None, model_log_probs: torch.Tensor | None = None,
                positions: np.ndarray | None = None):
    """Count a Kneser-Ney model on `train_words`, tune its discount and then the mixture weight
    on `dev_words`; returns (mixture predictor, {weight, discount, context, *_dev_loss, result}).
    A Kneser-Ney `ngram` already counted and tuned so (a budget run's) is used as it is;
    `model_log_probs`, the model's of the dev targets (at `positions`), where known
    (tune_mixture_weight)."""
    if ngram is None:  # per label and interpolated, for a labelled list (labels.LabelledNGram)
        ngram = count_model(train_words, vocab, context, dev_words=dev_words)
    result = {"ngram_context": ngram.context, "count_model": getattr(ngram, "method", "kneser_ney"),
              "discount": ngram.smoothing,
              **tune_mixture_weight(model, ngram, dev_words, vocab, model_log_probs, positions)}
    result["result"] = result_of(result)
    return mixture_predictor(model, ngram_predictor(ngram), result["weight"]), result


def attach(run, ngram: NGramModel | None = None, context: int | None = None,
           count_seconds: float | None = None, model_log_probs: torch.Tensor | None = None,
           positions: np.ndarray | None = None, learned_seconds: float | None = None,
           learned_apart: bool = False) -> dict:
    """Fit the mixture of a loaded run (or ensemble; runs.load_any) with a count model (the
    one given, counted already; or one counted here with `context` characters; by default the
    one a budget run counts, `mixing_model`, with the learned interpolation trained for
    `learned_seconds` beside it) and keep it as RUN/mix.json; a single run's summary.json
    records it and the run's result. `model_log_probs`: the run's model's of the dev targets
    (at `positions`: a budget run's final subset), where its training just computed them;
    `learned_apart`: a learned count model given was trained beside the neural model
    (learn_apart), so `count_seconds` is its counting alone. Returns mix.json."""
    if ngram is None and (context is None or learned_seconds):
        started = time.perf_counter()
        ngram = mixing_model(run.corpus(), None if context is None else [context], learned_seconds)
        count_seconds = time.perf_counter() - started if count_seconds is None else count_seconds
    elif ngram is None:
        ngram = count_model(run.splits["train"], run.vocab, context, dev_words=run.splits["dev"])
    _, fitted = fit_mixture(neural_predictor(run), run.splits["train"], run.splits["dev"], run.vocab, context,
                            ngram=ngram, model_log_probs=model_log_probs, positions=positions)
    if count_seconds is not None:
        fitted["count_seconds"] = count_seconds
    if isinstance(ngram, InterpolatedCounts):
        fitted["learned_steps"] = ngram.fit_steps
        fitted["learned_apart"] = learned_apart
    if isinstance(ngram, (NGramModel, InterpolatedCounts)):  # a labelled list's are counted per label: not kept
        arrays = ngram.kept() if isinstance(ngram, InterpolatedCounts) else ngram.counts.kept(ngram.context)
        rundir.write_counts(run.path, arrays, ngram.vocab_size, ngram.context)
    rundir.write_mixture(run.path, fitted)
    if rundir.is_run_dir(run.path) and rundir.read_summary(run.path):
        rundir.update_summary(run.path, mix=fitted,
                              result={"predictor": fitted["result"], "dev_loss": result_loss(fitted)})
    return fitted


def learns_counts(corpus, beside: bool = False) -> bool:
    """Whether a run on this corpus may mix with the learned interpolation of its counts: an
    unlabelled list of at least LEARNED_MIN_EXAMPLES training examples, or, trained `beside`
    the neural model on a core of its own, LEARNED_BESIDE_MIN_EXAMPLES."""
    least = LEARNED_BESIDE_MIN_EXAMPLES if beside else LEARNED_MIN_EXAMPLES
    return not corpus.labels and len(corpus.encoded("train")) >= least


def mixing_orders(corpus) -> list[int]:
    """The context lengths of the Kneser-Ney models a run may mix with: MIX_CONTEXT to
    MAX_MIX_CONTEXT, or MIX_CONTEXT alone for a labelled list (counted per label)."""
    return [MIX_CONTEXT] if corpus.labels else list(range(MIX_CONTEXT, MAX_MIX_CONTEXT + 1))


def mixing_model(corpus, orders: list[int] | None = None, learned_seconds: float | None = None):
    """The count model a run mixes with (a budget run, and `makemore mix` unless told the
    order): of these orders (default mixing_orders), the Kneser-Ney model that scores best on
    dev, tuned there. With `learned_seconds`, also the learned interpolation of the same counts
    to the longest order (interpolation.py), its weights trained that long on the training
    split: whichever of the two scores better on dev."""
    orders = mixing_orders(corpus) if orders is None else orders
    best = fit_best_order(corpus, orders) if len(orders) > 1 else fit_on_dev(corpus, orders[0])
    if not learned_seconds or not isinstance(best, NGramModel) or orders[-1] < 1:
        return best
    learned = InterpolatedCounts(best.counts, orders[-1]).fit(corpus.encoded("train"), seconds=learned_seconds)
    return better_count_model(corpus, best, learned)


def better_count_model(corpus, kneser_ney: NGramModel, learned: InterpolatedCounts):
    """Whichever of the two scores better on dev."""
    dev = corpus.encoded("dev")
    return learned if learned.nll(dev) < kneser_ney.nll(dev) else kneser_ney


def learn_apart(corpus, kneser_ney: NGramModel, seconds: float) -> Apart:
    """The learned interpolation of `kneser_ney`'s counts (to the longest order counted, as
    mixing_model's), trained for `seconds` in a process of its own: a budget run trains it so
    beside its neural model (fit.py). `apart_count_model` collects it."""
    learned = InterpolatedCounts(kneser_ney.counts, kneser_ney.counts.max_context)
    return fit_apart(learned, corpus.encoded("train"), seconds=seconds)


def apart_count_model(corpus, apart: Apart, context: int, smoothing, method: str, note=print):
    """The count model a run mixes with once `apart` (learn_apart) is done: the better on dev of
    it and Kneser-Ney (`method`) of `context` characters with this smoothing, on the counts read
    back from the learner's job (the run dropped its own while it trained); Kneser-Ney, and a
    note saying why, where the learner's process failed."""
    try:
        learned = apart.result()
    except RuntimeError as e:
        learned = None
        note(f"note: the learned count model failed, so the run mixes with Kneser-Ney: {str(e).strip().splitlines()[-1]}")
    kneser_ney = NGramModel(apart.counts(), context, method, smoothing)
    return kneser_ney if learned is None else better_count_model(corpus, kneser_ney, learned)


def neural_predictor(run):
    """A loaded run's neural model as a predictor: its model, or an ensemble's weighted mean."""
    from .runs import Ensemble

    if isinstance(run, Ensemble):
        return ensemble_predictor(run.models, run.info.get("weights"))
    return model_predictor(run.model)


def kept_count_model(run, context: int, discount, count_model_name: str = "kneser_ney"):
    """The run's count model of `context` characters: Kneser-Ney (`count_model_name`, either of
    ngram.KNESER_NEY) with this discount (or discounts), or the learned interpolation
    ("learned"), from its kept counts (RUN/counts.safetensors); a Kneser-Ney model whose counts
    were not kept is counted again from the training split."""
    if count_model_name not in KNESER_NEY + ("learned",):
        raise ValueError(f"unknown count model {count_model_name!r}")
    kept = None if run.vocab.labels else rundir.read_counts(run.path, run.vocab.size, context)
    if count_model_name == "learned" and kept is None:
        raise UserError(f"{run.path / 'counts.safetensors'} is missing; fit the mixture again with "
                        f"`makemore mix {run.path} --learned {LEARNED_SECONDS:g}`")
    if kept is not None:
        try:
            if count_model_name == "learned":
                return InterpolatedCounts.from_kept(kept, run.vocab.size, context)
            return NGramModel(NGramCounts.from_kept(kept, run.vocab.size, context), context, count_model_name,
                              discount)
        except (KeyError, ValueError):
            raise UserError(f"{run.path / 'counts.safetensors'} is corrupted; fit the mixture again with "
                            f"`makemore mix {run.path}`") from None
    return count_model(run.splits["train"], run.vocab, context, discount, method=count_model_name)


def result_words(predictor: str, count_model: str | None = None) -> str:
    """A run's result in words, for messages: "its mixture with a Kneser-Ney model", "its count
    model" (`count_model` as mix.json names it; None: not said which)."""
    counts = {None: "count model", "learned": "learned count model"}.get(count_model, "Kneser-Ney model")
    return {"mixture": f"its mixture with a {counts}", "ngram": f"its {counts}"}.get(predictor, "its neural model")


def run_predictor(run, use: str = "result"):
    """The predictor of a loaded run (runs.load_run / load_ensemble): `use` "model" for its
    neural model alone, "mixture" for the fitted mixture, "ngram" for its count model, "result"
    (default) for whichever is the run's result: the neural model where no mixture was fitted."""
    if use not in RESULTS + ("result",):
        raise ValueError(f"use must be one of {RESULTS} or 'result', got {use!r}")
    model = neural_predictor(run)
    fitted = rundir.read_mixture(run.path)
    if fitted is None:
        summary = (getattr(run, "summary", None) or {}) if use == "result" else {}
        recorded, mixed = summary.get("result"), summary.get("mix")
        if isinstance(recorded, dict) and recorded.get("predictor") in ("mixture", "ngram"):
            # mix.json was removed: the neural model alone would answer for the recorded result unsaid
            learned = isinstance(mixed, dict) and mixed.get("count_model") == "learned"
            raise UserError(f"{run.path / 'mix.json'} is missing, and summary.json records the run's result as "
                            f"{result_words(recorded['predictor'])}: fit it again "
                            f"with `makemore mix {run.path}{' --learned 60' if learned else ''}`, or add --neural "
                            f"for the model alone")
        if use in ("result", "model"):
            return model
        raise UserError(f"{run.path} has no fitted mixture; run `makemore mix {run.path} --ngram-context 5` first")
    try:
        if use == "result":
            use = fitted.get("result") or result_of(fitted)
        if use == "model":
            return model
        ngram = kept_count_model(run, int(fitted["ngram_context"]), fitted["discount"],
                                 fitted.get("count_model", "kneser_ney"))
        if use == "ngram":
            return ngram_predictor(ngram)
        return mixture_predictor(model, ngram_predictor(ngram), float(fitted["weight"]))
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{run.path / 'mix.json'} is corrupted; fit it again with `makemore mix {run.path}`") from None
