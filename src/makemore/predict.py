"""Predictors, and the one way makemore computes a loss over a split.

A *predictor* is a function from contexts (N, predictor.context_size) of character ids to the
log-probabilities (N, vocab) of the next character. A trained model is one (`model_predictor`:
any model of the registry, through its `logits_fn`); a seed ensemble (`ensemble_predictor`),
an n-gram model (ngram.py) and the mixture of the two (mixture.py, Bengio et al. 2003,
section 4) are others. Sampling, scoring and evaluation take any predictor and do not care which.

`split_nll` is the mean negative log-likelihood of a split (or of a fixed subset of it) under
a predictor: the lecture's `F.cross_entropy(model(Xdev), Ydev)`, computed in chunks whose
contexts are gathered from the compact examples (data.Examples) as they are needed, so that
memory stays bounded whatever the size of the split or of the vocabulary.
"""

from __future__ import annotations

import math
import sys
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .data import Examples
from .errors import UserError

Predictor = Callable[[torch.Tensor], torch.Tensor]
# Rows of an evaluation chunk: about 2^22 logits (16 MiB of float32) at a time, so that a
# vocabulary of thousands of characters evaluates in bounded memory and a small one in few calls.
CHUNK_LOGITS = 1 << 22
MAX_CHUNK_ROWS = 16_384


def chunk_rows(vocab_size: int | None) -> int:
    if vocab_size is None:
        return 4096
    return int(min(MAX_CHUNK_ROWS, max(256, CHUNK_LOGITS // max(1, vocab_size))))


def make_predictor(fn: Callable[[torch.Tensor], torch.Tensor], context_size: int, device="cpu",
                   vocab_size: int | None = None, labels: int = 0) -> Predictor:
    """Tag a contexts -> log-probs function with the context length it reads (its last
    columns), where it computes, how many characters it predicts (for chunk sizes), and how many
    labels it conditions on: a labelled predictor also reads column 0, the label (models/base.py;
    data.Examples of a labelled list give it), and labels.given_label makes it a predictor of
    one label's items."""
    fn.context_size = context_size
    fn.device = torch.device(device)
    fn.vocab_size = vocab_size
    fn.labels = labels
    return fn


def check_unlabelled(predictor: Predictor) -> None:
    """A labelled model's predictor reads the label in column 0 of each context: given characters
    alone it would read the first as a label, and write nonsense."""
    if getattr(predictor, "labels", 0):
        raise UserError("this predictor reads a label in front of each context (a model trained with --labels): "
                        "sample or score one label's items through labels.one_label(predictor, vocab, splits, "
                        "label) (docs/labels.md)")


def check_vocab(predictor: Predictor, vocab) -> None:
    """One UserError where the vocabulary is not the predictor's: its ids would be read as other
    characters (a names model given a Greek corpus's vocabulary writes Greek). Only the size can
    be told: a vocabulary of the same size from another corpus passes."""
    size = getattr(predictor, "vocab_size", None)
    if size is not None and size != vocab.size:
        raise UserError(f"the vocabulary has {vocab.size} symbols and the predictor predicts {size}: "
                        f"give the vocabulary of the corpus it was trained on")


def last_columns(ctx: torch.Tensor, width: int, labelled: bool) -> torch.Tensor:
    """The last `width` characters of contexts, the label (column 0) in front where there is one."""
    if not labelled:
        return ctx[:, ctx.shape[1] - width:]
    if ctx.shape[1] == width + 1:
        return ctx
    return torch.cat([ctx[:, :1], ctx[:, ctx.shape[1] - width:]], dim=1)


def model_predictor(model) -> Predictor:
    """A trained model as a predictor (in eval mode: no dropout), by its `logits_fn`; with
    `.target_log_probs(ctx, y)` too where the model scores targets faster than by its whole
    distribution (Model.target_log_probs_fn: an adaptive softmax), which `target_log_probs` uses."""
    block_size, labelled = model.cfg.block_size, bool(model.cfg.labels)
    model.eval()
    logits = model.logits_fn()

    @torch.no_grad()
    def scores(ctx: torch.Tensor) -> torch.Tensor:
        return logits(last_columns(ctx, block_size, labelled)).float()

    def predict(ctx: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(scores(ctx), dim=-1)

    predict.logits = scores  # sampling needs only the logits: it skips the log_softmax
    of_targets = model.target_log_probs_fn()
    if of_targets is not None:  # scoring needs only the targets' (an adaptive softmax: no V-wide row)
        predict.target_log_probs = lambda ctx, y: of_targets(last_columns(ctx, block_size, labelled), y).float()
    return make_predictor(predict, block_size, next(model.parameters()).device, model.cfg.vocab_size,
                          model.cfg.labels)


def ensemble_predictor(models, weights=None) -> Predictor:
    """An ensemble: the mixture of the members' next-character probabilities, each weighted
    1/K (a seed ensemble) or by `weights` (tuned on dev, `fit_ensemble_weights`):
    log sum_k w_k softmax(logits_k). Averaging probabilities, not logits, is a mixture of the
    models, whose log-likelihood can only beat the members' weighted average. The members may
    be different models, as long as they share a vocabulary; each reads its own context length
    (the longest is asked for)."""
    models = list(models)
    if not models:
        raise UserError("an ensemble needs at least one model")
    members = [model_predictor(m) for m in models]
    if len(members) == 1:
        return members[0]
    if weights is None:
        weights = [1.0 / len(members)] * len(members)
    if len(weights) != len(members) or min(weights) < 0 or not math.isclose(sum(weights), 1.0, rel_tol=1e-6):
        raise UserError(f"an ensemble of {len(members)} needs {len(members)} weights >= 0 summing to 1, got {weights}")
    log_w = torch.tensor([math.log(w) if w > 0 else -math.inf for w in weights], dtype=torch.float32)
    context_size = max(p.context_size for p in members)

    @torch.no_grad()
    def predict(ctx: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([p(ctx) for p in members])  # (K, N, vocab)
        return torch.logsumexp(logp + log_w.to(logp.device)[:, None, None], dim=0)  # without underflow

    @torch.no_grad()
    def of_targets(ctx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # each member by its fastest way
        logp = torch.stack([chunk_log_probs(p, ctx, y) for p in members])  # (K, N)
        return torch.logsumexp(logp + log_w.to(logp.device)[:, None], dim=0)

    predict.target_log_probs = of_targets
    return make_predictor(predict, context_size, members[0].device, members[0].vocab_size, members[0].labels)


def fit_ensemble_weights(member_log_probs: torch.Tensor, iterations: int = 500, tol: float = 1e-9) -> list[float]:
    """The mixture weights that maximise the likelihood of held-out targets, given each member's
    log p(target) (K, N): expectation-maximisation for the weights of a mixture of fixed
    models (the log-likelihood is concave in the weights, so EM reaches its maximum): the
    E-step gives each member's share of every example, the M-step sets each weight to its
    mean share."""
    logp = member_log_probs.double()
    k = logp.shape[0]
    log_w = torch.full((k, 1), -math.log(k), dtype=torch.float64)
    previous = -math.inf
    for _ in range(iterations):
        joint = logp + log_w
        total = torch.logsumexp(joint, dim=0)  # (N,) log of the mixture's probability
        log_w = torch.logsumexp(joint - total, dim=1, keepdim=True) - math.log(logp.shape[1])
        ll = total.mean().item()
        if ll - previous < tol:
            break
        previous = ll
    w = log_w.exp().squeeze(1)
    return (w / w.sum()).tolist()


def _progress(total: int, enabled: bool | None, desc: str):
    """A progress bar on a terminal for an evaluation that takes more than 2 seconds."""
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="ex", unit_scale=True, delay=2.0, leave=False, desc=desc, dynamic_ncols=True)


@torch.no_grad()
def target_log_probs(predictor: Predictor, examples: Examples, positions: np.ndarray | None = None,
                     progress: bool | None = False, desc: str = "evaluating") -> torch.Tensor:
    """log p(target | context) of each example at `positions` (default all), float64 on the CPU,
    computed a chunk at a time."""
    check_examples(predictor, examples)
    n = len(examples) if positions is None else len(positions)
    out = torch.empty(n, dtype=torch.float64)
    rows = chunk_rows(getattr(predictor, "vocab_size", None))
    bar = _progress(n, progress, desc)
    try:
        for i in range(0, n, rows):
            pos = np.arange(i, min(n, i + rows), dtype=np.int64) if positions is None else positions[i:i + rows]
            X, Y = examples.batch(pos, predictor.context_size)
            X, Y = torch.from_numpy(X).to(predictor.device), torch.from_numpy(Y).to(predictor.device)
            out[i:i + len(pos)] = chunk_log_probs(predictor, X, Y).double().cpu()
            if bar is not None:
                bar.update(len(pos))
    finally:
        if bar is not None:
            bar.close()
    return out


def check_examples(predictor: Predictor, examples: Examples) -> None:
    """One UserError where the examples cannot be another vocabulary's as the predictor reads
    it: a label in front of each context or not, a vocabulary of another size, character ids past
    its vocabulary (an index error deep in the model otherwise). Examples of another vocabulary
    of the same size are not told apart: a corpus's examples go with the runs trained on it."""
    labels = getattr(predictor, "labels", None)
    if labels is not None and bool(labels) != (examples.labels is not None):
        raise UserError("these examples are of a labelled list and the predictor reads no label" if not labels else
                        "the predictor reads a label in front of each context, and these examples have none: "
                        "examples of the labelled list it was trained on, or labels.one_label's predictor")
    vocab_size = getattr(predictor, "vocab_size", None)
    if vocab_size and examples.vocab_size is not None and examples.vocab_size != vocab_size:
        raise UserError(f"these examples were encoded with a vocabulary of {examples.vocab_size} symbols and the "
                        f"predictor predicts {vocab_size}: give examples of the corpus it was trained on")
    largest = int(examples.ids.max()) if vocab_size and len(examples.ids) else -1
    if vocab_size and largest >= vocab_size:
        raise UserError(f"these examples hold character ids up to {largest}, past the predictor's vocabulary of "
                        f"{vocab_size}: they were encoded with another vocabulary")


@torch.no_grad()
def chunk_log_probs(predictor: Predictor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """log p(Y | X) of one chunk of contexts X (N, context_size) on the predictor's device."""
    of_targets = getattr(predictor, "target_log_probs", None)
    if of_targets is not None:
        return of_targets(X, Y)
    logits_of = getattr(predictor, "logits", None)
    if logits_of is not None:  # log p(y) = logit_y - logsumexp(logits): one pass, no (N, V) output
        z = logits_of(X)
        return z.gather(1, Y[:, None]).squeeze(1) - torch.logsumexp(z, dim=1)
    return predictor(X).gather(1, Y[:, None]).squeeze(1)


@torch.no_grad()
def tensor_nll(predictor: Predictor, X: torch.Tensor, Y: torch.Tensor) -> float:
    """Mean NLL of targets Y after contexts X that are on the predictor's device already (the
    dev subset a run on a GPU keeps there): summed there a chunk at a time, read back once."""
    rows = chunk_rows(getattr(predictor, "vocab_size", None))
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    for i in range(0, X.shape[0], rows):
        total -= chunk_log_probs(predictor, X[i:i + rows], Y[i:i + rows]).double().sum()
    return total.item() / max(1, X.shape[0])


def split_nll(predictor: Predictor, examples: Examples, positions: np.ndarray | None = None,
              progress: bool | None = False, desc: str = "evaluating") -> float:
    """Mean negative log-likelihood (nats per character) of the examples at `positions`."""
    logp = target_log_probs(predictor, examples, positions, progress, desc)
    return -logp.sum().item() / max(1, logp.shape[0])


def words_nll(predictor: Predictor, words: list[str], vocab) -> float:
    """Mean NLL per character (end token included) of these words: for small lists."""
    return split_nll(predictor, Examples.from_words(words, vocab))
