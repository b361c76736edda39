"""The served runs: the ONLY code of the server that knows how runs are stored, loaded and
turned into a predictor, and what the page is shown of them (samples, scores, embeddings,
training curves). When the core's run format or model classes change, change this module only.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .labelled import Labels

SAMPLE_MAX_LEN = 64  # characters a sample may grow after its prefix (sample()'s max_len)
TABLES_KEPT = 4  # sampling tables kept per model and label, by temperature and top-k (each at most 64 MiB:
TABLE_BYTES = 4 << 26  # sampling.TABLE_CELLS), and at most this many bytes of them per model (256 MiB)
NEIGHBOURS = 5


@dataclass
class ServedModel:
    """What the server needs of one run (or seed ensemble, or --mix mixture)."""

    path: Path
    kind: str                        # "run" or "ensemble of K", and what of it is served (mixture, count model)
    vocab: object                    # data.Vocab: .chars (index 0 = boundary), .boundary, .encode
    splits: dict[str, frozenset]     # train/dev/test words as sets, for the novelty tags
    predictor: object                # contexts (N, T) -> log-probs (N, vocab); see sampling.py
    embeddings: np.ndarray | None    # (vocab, emb_dim) character embeddings C, or None
    embeddings_of: str               # which model's C it is (an ensemble's first member)
    metrics: dict[str, Path]         # curve label -> metrics.csv (one per ensemble member)
    config: dict                     # config.json, as written by train
    params: int                      # parameters (all members of an ensemble together)
    dev_loss: float | None           # the model's dev loss as training reported it
    labels: Labels | None = None     # a labelled run's (--labels): labelled.py; None for a list of words
    tables: dict = field(default_factory=dict)  # sampling tables by (label, temperature, top_k): sampling_table
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # guards `tables`


def load_model(path: str | Path, use: str = "result") -> ServedModel:
    """A run directory or seed-ensemble directory, ready to serve: its result (mixture.py), or
    `use` "model" or "mixture" as sample and score take them; a bad one is a UserError."""
    from ..mixture import result_of, run_predictor
    from ..rundir import read_mixture
    from ..runs import Ensemble, load_any

    run = load_any(path)
    predictor = run_predictor(run, use)
    settings = read_mixture(run.path)
    if use == "result":
        use = "model" if settings is None else settings.get("result") or result_of(settings)
    members = run.runs if isinstance(run, Ensemble) else [run]
    first = members[0]
    config = json.loads((first.path / "config.json").read_text(encoding="utf-8"))
    config.pop("format", None)
    if isinstance(run, Ensemble):
        kind, dev_loss = f"ensemble of {len(members)}", run.info.get("dev_loss")
        config["members"] = [m.path.name for m in members]
    else:
        kind, dev_loss = "run", run.summary.get("dev_loss")
    if use != "model":
        kind += " + n-gram mixture" if use == "mixture" else ": its count model (the run's result)"
        dev_loss = settings.get("mix_dev_loss" if use == "mixture" else "ngram_dev_loss", dev_loss)
        config["mix"] = settings
    label = (lambda r: r.path.name) if len(members) > 1 else (lambda r: "run")
    return ServedModel(
        path=Path(path), kind=kind, vocab=run.vocab, predictor=predictor,
        splits={name: frozenset(words) for name, words in run.splits.items()},  # built once, not per request
        embeddings=_embeddings(first.model),
        embeddings_of=first.path.name if len(members) > 1 else "",
        metrics={label(r): r.path / "metrics.csv" for r in members},
        config=config, params=sum(r.model.num_params() for r in members),
        dev_loss=float(dev_loss) if isinstance(dev_loss, (int, float)) else None,
        labels=Labels.of_run(predictor, run.vocab, run.splits) if run.vocab.labels else None)


def _embeddings(model) -> np.ndarray | None:
    table = model.embedding_table()
    return None if table is None else table.detach().cpu().double().numpy()


def random_seed() -> int:
    """A seed for a request without one (not torch.seed(), which would reseed torch's global
    generator from a thread)."""
    return secrets.randbelow(2**62)


def sampling_table(model: ServedModel, temperature: float, top_k: int | None, label: str | None = None):
    """The model's complete next-character table at this temperature and top-k (None where the
    model has too many contexts for one), of a labelled run's `label`, computed once and kept:
    the TABLES_KEPT most recent per label, TABLE_BYTES in all. Every request reads the same
    rows, so a seeded request's names never depend on what else was drawn with it (rows
    computed in batches of other sizes can differ in their last bit)."""
    from ..sampling import context_table

    key = (label, temperature, top_k)
    with model.lock:  # one computes it; the others wait for it rather than compute it again
        if key not in model.tables:
            predictor, vocab = _drawn_by(model, label)
            model.tables[key] = context_table(predictor, vocab, temperature, top_k)
            kept = TABLES_KEPT * max(1, len(model.labels.names) if model.labels else 1)
            while len(model.tables) > 1 and (len(model.tables) > kept or sum(
                    t.nbytes for t in model.tables.values() if t is not None) > TABLE_BYTES):
                model.tables.pop(next(iter(model.tables)))  # the least recently used (never the new one)
        model.tables[key] = table = model.tables.pop(key)  # the most recently used last
    return table


def _drawn_by(model: ServedModel, label: str | None):
    """(predictor, vocabulary) that draws the run's words, or a labelled run's items of `label`."""
    if label is None:
        return model.predictor, model.vocab
    view = model.labels.views[label]
    return view.predictor, view.vocab


def draw_batch(model: ServedModel, jobs: list[tuple[int, int]], temperature: float, top_k: int | None,
               prefix: str, new_only: bool, constraints, label: str | None = None) -> list:
    """Requests with these settings, each (n, seed), drawn together (sampling.sample_streams):
    for each, its tagged samples, the same as drawn alone, or the UserError that ended it. A
    labelled run's samples are items of `label`, or without one of labels drawn by their
    training shares (Labels.draw_any), each sample with its "label"."""
    from ..labels import label_constraints
    from ..sampling import sample_streams

    def draw(label: str | None, jobs: list) -> list:
        predictor, vocab = _drawn_by(model, label)
        splits = model.splits if label is None else model.labels.views[label].splits
        # an excluded LABEL<TAB>ITEM leaves ITEM out under LABEL only, as `makemore sample` reads it
        own = constraints if label is None else label_constraints(constraints, model.vocab, label)
        results = sample_streams(predictor, vocab, splits, jobs, new_only=new_only, constraints=own,
                                 temperature=temperature, top_k=top_k, prefix=prefix, max_len=SAMPLE_MAX_LEN,
                                 table=sampling_table(model, temperature, top_k, label))
        if label is not None:
            results = [r if isinstance(r, Exception) else [{**s, "label": label} for s in r] for r in results]
        return results

    if model.labels is None or label is not None:
        return draw(label, jobs)
    return model.labels.draw_any(jobs, draw)


def draw_samples(model: ServedModel, n: int, seed: int | None, temperature: float, top_k: int | None,
                 prefix: str, new_only: bool, constraints=None, label: str | None = None) -> list[dict]:
    """One request alone: draw_batch of one."""
    [result] = draw_batch(model, [(n, random_seed() if seed is None else seed)], temperature, top_k, prefix,
                          new_only, constraints, label)
    if isinstance(result, Exception):
        raise result
    return result


def score_words(model: ServedModel, words: list[str], top: int, label: str | None = None) -> list[dict]:
    """sampling.score of each word; a labelled run's with its label posterior (Labels.score)."""
    from ..sampling import score

    if model.labels is not None:
        return model.labels.score(words, top, label)
    return score(model.predictor, model.vocab, words, top=top)


# --------------------------------------------------------------------------------------------
# Reading a run for the page: embeddings, metrics


def embedding_view(model: ServedModel) -> dict:
    """The character embeddings as the page draws them: 2-D points (C itself, or its first two
    principal components) and each character's nearest neighbours in the full space."""
    from ..experiments import embedding_projection, nearest_neighbours

    chars = list(model.vocab.chars)
    if model.embeddings is None:
        return {"chars": chars, "points": None, "note": "this model has no character embedding table"}
    C = model.embeddings
    xy, share, shares = embedding_projection(C)
    dim = C.shape[1]
    if dim == 2:
        axes = ["C[:, 0]", "C[:, 1]"]
    elif dim == 1:
        axes = ["C[:, 0]", ""]
    else:
        axes = [f"PC 1 ({shares[0]:.0%} of the variance)", f"PC 2 ({shares[1]:.0%} of the variance)"]
    neighbours = nearest_neighbours(C, NEIGHBOURS)
    return {
        "chars": chars, "boundary": model.vocab.boundary, "emb_dim": dim, "variance_share": share,
        "axes": axes, "of_member": model.embeddings_of,
        "points": [[float(x), float(y)] for x, y in xy],
        "neighbours": [[{"char": chars[j], "distance": d} for j, d in nn] for nn in neighbours],
    }


MAX_POINTS = 4000  # rows per curve sent to the page; longer logs are thinned evenly

def read_metrics_rows(path: Path) -> dict[str, list]:
    """metrics.csv (rundir.read_metrics, which skips a row being written) as lists by column,
    None for a blank or non-finite cell; a long log thinned to MAX_POINTS rows, keeping every
    row with a dev loss."""
    from ..rundir import read_metrics

    table = read_metrics(path, strict=False)
    columns = {c: [float(v) if math.isfinite(v) else None for v in values] for c, values in table.items()}
    n = len(columns["step"])
    if n > MAX_POINTS:
        stride = math.ceil(n / MAX_POINTS)
        keep = [i for i in range(n) if i % stride == 0 or columns["dev_loss"][i] is not None or i == n - 1]
        columns = {c: [v[i] for i in keep] for c, v in columns.items()}
    return columns


def is_training(run_dir: Path) -> bool:
    """Still training: a process holds the run's lock (rundir.RunLock, held by training until its
    last step). A run killed before its end is not live, whatever its files' times say."""
    from ..rundir import RunLock

    return RunLock.holder(run_dir) is not None


def metrics_view(model: ServedModel) -> dict:
    curves = [{"label": label, "training": is_training(path.parent), **read_metrics_rows(path)}
              for label, path in model.metrics.items()]
    return {"curves": curves, "training": any(c["training"] for c in curves)}

