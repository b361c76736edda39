"""How much better than a budget run's mixture could its two models do together? docs/results/mixing_probes_*.json.

    python scripts/mixing_probes.py RUN [--subset 40000] [--results FILE]

RUN is a finished budget run whose count model is the learned interpolation (interpolation.py),
e.g. a `--budget 600` run on wordfreq's words. Over its dev split this scores its neural model,
its count model and their mixture with one weight (what the run uses; mixture.py), and then ways
of combining them that a run does not use, each fitted on held-out data and so measured honestly:

- `kneser_ney`: the learned count model mixed with Kneser-Ney of the same counts (one weight on
  dev): what Kneser-Ney's discounting would add to it.
- `context_weight`: the weight of the neural model made a function of the context (a 32-unit tanh
  network of the context's log counts, as the gate reads them), and `gate`: a network of the same
  features (64 units) that weighs all of the count model's distributions and the neural model
  (its logits start at the learned gate's). Both are cross-fitted: fitted on the dev words of one
  random half, scored on the other, and the other way round.
- `geometric`: P proportional to P_model^a P_count^b (log-linear interpolation), on a random
  subset of dev examples (it needs whole rows of both), a and b on a grid, the linear mixture on
  the same subset beside it. Two parameters fitted on what they score: a bound, not an estimate.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from pathlib import Path

import numpy as np
import torch

from makemore.data import Examples
from makemore.devices import usable_cores
from makemore.interpolation import InterpolatedCounts
from makemore.mixture import kept_count_model, neural_predictor, tune_mixture_weight
from makemore.ngram import NGramModel
from makemore.outputs import atomic_write_json
from makemore.predict import target_log_probs
from makemore.rundir import read_mixture
from makemore.runs import load_run
from makemore.utils import cpu_name

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 1 << 16


def linear(model_log_probs: torch.Tensor, count_model, run, positions: np.ndarray | None = None) -> dict:
    """The mixture with one weight on dev (or its examples at `positions`), as a run fits it
    (mixture.tune_mixture_weight): {"weight", "mix_dev_loss", ...}."""
    return tune_mixture_weight(None, count_model, run.splits["dev"], run.vocab, model_log_probs=model_log_probs,
                               positions=positions)


def gate_inputs(count_model: InterpolatedCounts, dev: Examples):
    """Per dev example: the count model's distributions' log-probs of the target, its gate's
    features (normalised), which distributions are seen, and its gate's log-weights."""
    context_ids, targets, chars = count_model.inputs(dev)
    log_probs, features, seen, gate = [], [], [], []
    with torch.no_grad():
        for i in range(0, len(targets), CHUNK):
            lp, f, s = count_model.components([ids[i:i + CHUNK] for ids in context_ids], targets[i:i + CHUNK])
            c = None if chars is None else torch.from_numpy(chars[i:i + CHUNK].astype(np.int64))
            log_probs.append(lp), features.append(f), seen.append(s), gate.append(count_model.gate(f, s, c))
    features = torch.cat([torch.cat(features), torch.cat(seen).float()], dim=1)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    return torch.cat(log_probs), features, torch.cat(seen), torch.cat(gate)


def cross_fitted(loss_of, make_net, halves: torch.Tensor, steps: int = 1500, batch: int = 4096) -> float:
    """Mean NLL over dev of a network fitted on one half of the words and scored on the other,
    both ways round."""
    total = 0.0
    for fit_on in (halves, ~halves):
        torch.manual_seed(0)
        net = make_net()
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        rows, generator = torch.nonzero(fit_on)[:, 0], torch.Generator().manual_seed(0)
        for _ in range(steps):
            chosen = rows[torch.randint(len(rows), (batch,), generator=generator)]
            loss = loss_of(net, chosen).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            total += float(loss_of(net, torch.nonzero(~fit_on)[:, 0]).sum())
    return total / len(halves)


def geometric(run, count_model, dev: Examples, subset: int) -> dict:
    positions = np.sort(np.random.default_rng(0).choice(len(dev), min(subset, len(dev)), replace=False))
    model, k = neural_predictor(run), count_model.context
    width = max(run.model.cfg.block_size, k)
    targets = torch.from_numpy(dev.targets(positions).astype(np.int64))
    model_rows, count_rows = [], []
    for i in range(0, len(positions), 2000):
        contexts = torch.from_numpy(dev.contexts(positions[i:i + 2000], width).astype(np.int64))
        with torch.no_grad():
            model_rows.append(model(contexts).float())
        count_rows.append(count_model.probs(contexts[:, -k:].numpy()).float().clamp_min(1e-30).log())
    model_rows, count_rows = torch.cat(model_rows), torch.cat(count_rows)
    rows = torch.arange(len(targets))
    one_weight = linear(model_rows[rows, targets], count_model, run, positions)
    grid = [(float(-torch.log_softmax(a * model_rows + b * count_rows, 1)[rows, targets].mean()), a, b)
            for a in (0.1, 0.2, 0.3, 0.4) for b in (0.6, 0.7, 0.8, 0.9, 1.0)]
    loss, a, b = min(grid)
    return {"examples": len(positions), "linear": one_weight["mix_dev_loss"], "linear_weight": one_weight["weight"],
            "geometric": loss,
            "model_power": a, "count_power": b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--subset", type=int, default=40_000, help="dev examples of the geometric mixture")
    parser.add_argument("--results", help="the JSON file to write (default docs/results/mixing_probes_<run>.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    fitted = read_mixture(run.path) or {}
    if fitted.get("count_model") != "learned":
        sys.exit(f"{run.path}: its mixture is not with the learned count model (mix.json count_model)")
    dev = Examples.from_words(run.splits["dev"], run.vocab)
    count_model = kept_count_model(run, int(fitted["ngram_context"]), None, "learned")
    a = target_log_probs(neural_predictor(run), dev).float()
    b = count_model.target_log_probs(dev).float()
    kneser_ney = NGramModel(count_model.counts, count_model.context, "kneser_ney")
    kneser_ney.tune(dev)
    c = kneser_ney.target_log_probs(dev).float()
    results = {"model": float(-a.mean()), "count_model": float(-b.mean()),
               "scalar_mixture": linear(a, count_model, run)["mix_dev_loss"],
               "kneser_ney": {"alone": float(-c.mean()),
                              "mixed_with_the_count_model": linear(b, kneser_ney, run)["mix_dev_loss"]}}
    print(f"model {results['model']:.4f}, learned count model {results['count_model']:.4f}, "
          f"mixture {results['scalar_mixture']:.4f}; learned with Kneser-Ney "
          f"{results['kneser_ney']['mixed_with_the_count_model']:.4f}", flush=True)

    log_probs, features, seen, gate = gate_inputs(count_model, dev)
    word_of = np.searchsorted(dev.starts, np.arange(len(dev)), side="right") - 1
    halves = torch.from_numpy(np.random.default_rng(0).random(len(dev.starts))[word_of] < 0.5)

    def context_weight(net, rows):
        weights = torch.log_softmax(net(features[rows]), dim=1)
        return -torch.logaddexp(weights[:, 0] + a[rows], weights[:, 1] + b[rows])

    def all_distributions(net, rows):
        logits = torch.cat([gate[rows], torch.zeros(len(rows), 1)], dim=1) + net(features[rows])
        visible = torch.cat([seen[rows], torch.ones(len(rows), 1, dtype=torch.bool)], dim=1)
        weights = torch.log_softmax(logits.masked_fill(~visible, -math.inf), dim=1)
        return -torch.logsumexp(weights + torch.cat([log_probs[rows], a[rows, None]], dim=1), dim=1)

    width = features.shape[1]
    results["context_weight"] = cross_fitted(context_weight, lambda: torch.nn.Sequential(
        torch.nn.Linear(width, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)), halves)
    results["gate"] = cross_fitted(all_distributions, lambda: torch.nn.Sequential(
        torch.nn.Linear(width, 64), torch.nn.Tanh(), torch.nn.Linear(64, log_probs.shape[1] + 1)), halves)
    print(f"cross-fitted: context weight {results['context_weight']:.4f}, gate {results['gate']:.4f}", flush=True)
    results["geometric"] = geometric(run, count_model, dev, args.subset)
    print(f"on {results['geometric']['examples']:,} dev examples: linear {results['geometric']['linear']:.4f}, "
          f"geometric {results['geometric']['geometric']:.4f}", flush=True)
    out = Path(args.results or ROOT / "docs" / "results" / f"mixing_probes_{run.path.name}.json")
    atomic_write_json(out, {"command": "python scripts/mixing_probes.py " + " ".join(sys.argv[1:]),
                            "machine": f"{cpu_name()}, {usable_cores()} cores, torch {torch.__version__}, 1 thread",
                            "date": datetime.date.today().isoformat(), "run": str(run.path),
                            "dev_examples": len(dev), **results})
    print(out)


if __name__ == "__main__":
    main()
