"""Runs combined into one model: `makemore ensemble` (several runs) and `makemore mix` (a run and
a Kneser-Ney model, Bengio et al. 2003, section 4)."""

from __future__ import annotations

import math
import sys

from ..errors import UserError
from .common import _load, _print_json, _subparser


def add_ensemble(sub) -> None:
    p = _subparser(sub, "ensemble", "one model from several trained runs (any models, same data): the weighted "
                   "mean of their probabilities, weights fitted on dev",
                   "makemore ensemble runs/default runs/wavenet runs/gru --out runs/ens\n"
                   "  makemore mix runs/ens --ngram-context 5")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories trained on the same data and split")
    p.add_argument("--out", required=True, help="the ensemble directory to create (the runs are copied into it)")
    p.add_argument("--equal", action="store_true", help="weight every member 1/K (default: the weights that "
                   "maximise the dev likelihood, fitted by EM)")
    p.add_argument("--json", action="store_true")


def cmd_ensemble(args) -> int:
    import torch

    from ..data import Examples
    from ..predict import ensemble_predictor, fit_ensemble_weights, model_predictor, split_nll, target_log_probs
    from ..rundir import TAKE_AN_ENSEMBLE
    from ..runs import combine_runs, load_members, member_names

    runs = load_members(args.out, args.runs)
    dev = Examples.from_words(runs[0].splits["dev"], runs[0].vocab)
    progress = False if args.json else None
    logp = torch.stack([target_log_probs(model_predictor(r.model), dev, progress=progress,
                                         desc=f"dev loss of {r.path.name}") for r in runs])
    weights = [1.0 / len(runs)] * len(runs) if args.equal else fit_ensemble_weights(logp)
    dev_loss = split_nll(ensemble_predictor([r.model for r in runs], weights), dev, progress=progress, desc="dev loss")
    names = member_names(runs)
    members = {name: -logp[k].mean().item() for k, name in enumerate(names)}
    _note_mixed_members(runs, names, members, args.out)
    ens = combine_runs(args.out, runs, {"weights": weights, "weights_from": "equal" if args.equal else "dev",
                                        "member_dev_loss": members, "dev_loss": dev_loss})
    if args.json:
        _print_json({"out": str(ens.path), "member_dev_loss": members, "weights": dict(zip(names, weights)),
                     "dev_loss": dev_loss})
        return 0
    for (name, loss), w in zip(members.items(), weights):
        print(f"{name:<24} dev loss {loss:.4f}  weight {w:.3f}")
    how = "equal weights" if args.equal else "weights fitted on dev"
    print(f"{'ensemble':<24} dev loss {dev_loss:.4f}  (mixture of the {len(members)} members' probabilities, {how})")
    print(f"saved to {ens.path}; {TAKE_AN_ENSEMBLE} take it as one run")
    return 0


def _note_mixed_members(runs, names: list[str], members: dict[str, float], out: str) -> None:
    """Say so where a member's result was not its neural model: an ensemble averages the members'
    neural models, so a mixture a run was judged by is not what joins (`makemore mix OUT` is)."""
    from ..mixture import result_words

    for run, name in zip(runs, names):
        fitted = _mixture(run)
        if fitted is None or fitted.get("result", "mixture") == "model" or "mix_dev_loss" not in fitted:
            continue
        result = fitted.get("result", "mixture")
        loss = fitted["ngram_dev_loss" if result == "ngram" else "mix_dev_loss"]
        print(f"note: {name}'s result is {result_words(result)} (dev {loss:.4f}); the ensemble takes its neural model (dev {members[name]:.4f}): "
              f"`makemore mix {out}` mixes the ensemble with a count model", file=sys.stderr)


def add_mix(sub) -> None:
    p = _subparser(sub, "mix", "mix a trained model with a Kneser-Ney model (Bengio et al. 2003, sec. 4), weight tuned on dev",
                   "makemore mix runs/lecture --ngram-context 5\n  makemore sample runs/lecture --mix")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--ngram-context", type=int, default=None,
                   help="context length of the n-gram model (default: of 5 to 7, the one that scores best on dev, "
                        "as a budget run chooses; 5 for a labelled list)")
    p.add_argument("--learned", type=float, default=None, metavar="SECONDS",
                   help="also train the learned interpolation of the counts (a small network weighs their orders) for "
                        "this long and mix with it where it beats Kneser-Ney on dev (default: 60 on an unlabelled "
                        "list of a million training examples or more, as a budget run does, or where the run's "
                        "mixture was with it; 0: Kneser-Ney only)")
    p.add_argument("--json", action="store_true")


def _mixture(run) -> dict | None:
    """The run's mix.json, or None where it has none or it is corrupted (`mix` is how a user
    fits it again)."""
    from ..rundir import read_mixture

    try:
        fitted = read_mixture(run.path)
    except UserError:
        return None
    return fitted if isinstance(fitted, dict) else None


def _kept_count_model(run) -> str | None:
    """The count model of the run's mixture, or None where it has none."""
    return (_mixture(run) or {}).get("count_model")


def cmd_mix(args) -> int:
    from ..mixture import LEARNED_SECONDS, MIN_GAIN, attach, learns_counts
    from ..recipes import MAX_MIX_CONTEXT
    from ..rundir import RunLock

    if args.ngram_context is not None and not 1 <= args.ngram_context <= 12:
        raise UserError(f"ngram-context must be between 1 and 12, got {args.ngram_context}")
    if args.learned is not None and not (math.isfinite(args.learned) and args.learned >= 0):
        raise UserError(f"--learned must be a number of seconds, 0 or more, got {args.learned:g}")
    run = _load(args.run, ensemble=True)
    learned = args.learned
    if learned is None:  # as a budget run on this list would, or as this run's own mixture did
        learned = LEARNED_SECONDS if learns_counts(run.corpus()) or _kept_count_model(run) == "learned" else 0.0
    if learned and run.vocab.labels:
        raise UserError("--learned: the learned interpolation is for an unlabelled list; a labelled list mixes with "
                        "Kneser-Ney per label")
    if learned:  # a minute of silence otherwise
        print(f"counting, then training the learned interpolation of the counts for {learned:g} s "
              f"(--learned 0: Kneser-Ney alone)", file=sys.stderr, flush=True)
    try:
        with RunLock(run.path):
            result = attach(run, context=args.ngram_context, learned_seconds=learned or None)
    except MemoryError:
        raise UserError(f"out of memory counting contexts of {args.ngram_context or MAX_MIX_CONTEXT} characters; "
                        f"use a smaller --ngram-context") from None
    if args.json:
        _print_json(result)
        return 0
    print(f"model dev loss        {result['mlp_dev_loss']:.4f}")
    if result.get("count_model") == "learned":
        print(f"learned (k={result['ngram_context']}) dev     {result['ngram_dev_loss']:.4f}  (the learned interpolation "
              f"of the counts: it beat Kneser-Ney on dev)")
    else:
        discount = result["discount"]
        if isinstance(discount, dict):
            how = (f"per label, interpolated with all labels' by weights {min(discount['weights']):.2f}-"
                   f"{max(discount['weights']):.2f}")
        elif isinstance(discount, (list, tuple)):
            how = "discounts " + ", ".join(f"{d:.3f}" for d in discount)
        else:
            how = f"discount {discount:.3f}"
        name = "modified Kneser-Ney" if result.get("count_model") == "modified_kneser_ney" else "Kneser-Ney"
        print(f"{name} (k={result['ngram_context']}) dev  {result['ngram_dev_loss']:.4f}  ({how})")
    print(f"mixture dev loss      {result['mix_dev_loss']:.4f}  (weight on the model {result['weight']:.3f})")
    why = {"ngram": f" (the mixture gains less than {MIN_GAIN:g} over the count model alone)",
           "model": " (the weight on the model is 1)"}.get(result["result"], "")
    print(f"result                {result['result']}{why}: what eval, sample, score and serve use "
          f"({run.path / 'mix.json'}; --neural for the model alone)")
    return 0
