"""A count model whose interpolation weights a small network learns from the counts.

Interpolated Kneser-Ney (ngram.py) mixes the distributions of a context's orders with weights
one discount fixes: D * T(h) / N(h) handed down at every order. Those weights are a guess at how
far to trust each order, given how often the context h was seen and how many characters followed
it. Here a small network makes that guess, learned from data (Neubig & Dyer 2016, "Generalizing
and Hybridizing Count-based and Neural Language Models"; Jelinek & Mercer's deleted
interpolation, with weights that depend on the context's counts):

    P(c | h) = sum_j a_j(h) raw_j(c | h) + sum_j b_j(h) cont_j(c | h) + u(h) / V

where h_j is the last j characters of h, raw_j(c | h) = N(h_j, c) / N(h_j) the relative frequency
of c after h_j (j = 0..k), cont_j(c | h) = N1+(. h_j c) / N1+(. h_j .) Kneser-Ney's continuation
distribution (j = 0..k-1), and the weights a softmax over a two-layer tanh network of the logs
of N(h_j), T(h_j) (distinct characters seen after h_j) and N1+(. h_j .), and of an embedding of
each character of h (Neubig & Dyer's gate reads the context too): how far an order can be trusted
differs between scripts and languages, which the counts alone do not say (on a training split of
a million examples or more: on fewer the gate learns each context's own weights). A distribution whose
context was never seen gets weight 0, and the uniform term keeps every character possible, so
every P(. | h) sums to one over the vocabulary.

The network is trained by minibatch gradient descent (Adam) on the training split with each
example's own occurrence left out of the counts it reads (leave-one-out: N(h_j, c) - 1, and the
follower and continuation counts that it alone made), so that each example sees the counts a
held-out example would; without that every target would have been seen after its context, and
the network would learn to trust the longest context always. Ney, Essen and Kneser (1994) derive
Kneser-Ney's discount by the same leave-one-out argument.

On wordfreq's words (scripts/make_wordfreq_list.py) this model scores 2.204 on dev after a minute of
training on one thread and 2.201 after two, where the best Kneser-Ney model scores 2.227; a 600-s
budget run trains it beside its neural model to 2.198 (docs/big-lists.md).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import jobs
from .counts import NGramCounts, array_columns, as_ids, check_range, example_columns
from .data import Examples
from .runtime import using_threads

# Width of the gate's two hidden layers, and of the embedding of each context character it reads.
# What feeds them is a context's log counts (N(h_j) and T(h_j) for j = 0..k, N1+(. h_j .) for j < k)
# and its characters: on wordfreq's words the characters let the gate learn how far each script's and
# language's contexts can be trusted (2.2008 on dev after 120 s of training on one thread, against
# 2.2045 for 64 units reading the counts alone; scripts/learned_counts.py, docs/big-lists-studies.md).
HIDDEN = 128
EMB_DIM = 16
# The gate reads the characters only where the training split is this big. On a small one it learns
# each context's own weights and over-fits: on names.txt (182,441 examples) it scored 1.9493 on dev
# after 6 s of training and 2.0595 after 60, worse than Kneser-Ney's 1.9820, where the gate of the
# counts alone (COUNTS_HIDDEN units) went on down to 1.9509 (scripts/learned_counts.py, docs/big-lists-studies.md).
CHARS_MIN_EXAMPLES = 1_000_000
COUNTS_HIDDEN = 64
# Training stops after this many passes over the training split, whatever time is left: on a small
# one the gate over-fits beyond it. On names.txt (182,441 examples; the counts-only gate) dev went
# 1.9516, 1.9509, 1.9520 after 29, 58 and 115 passes, and 1.9629 after 280 in a 300-s budget run
# (scripts/learned_counts.py, scripts/budget_runs.py); on wordfreq's words 30 minutes is 21 passes.
MAX_PASSES = 60
# Rows per look-up and network pass when scoring: bounds the memory of a split's evaluation.
CHUNK = 1 << 16


class Gate(nn.Module):
    """The interpolation weights: log-softmax over the 2k + 2 distributions of a context
    (raw 0..k, continuation 0..k-1, uniform) from its 3k + 2 log counts and, where `emb_dim`,
    an embedding of each of its k characters (a vocabulary of `vocab_size`)."""

    def __init__(self, context: int, hidden: int, vocab_size: int = 0, emb_dim: int = 0):
        super().__init__()
        self.context, self.emb_dim = context, emb_dim if vocab_size else 0
        self.emb = nn.Embedding(vocab_size, self.emb_dim) if self.emb_dim else None
        self.net = nn.Sequential(nn.Linear(3 * context + 2 + context * self.emb_dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2 * context + 2))
        nn.init.zeros_(self.net[-1].weight)  # starts by weighing every distribution seen alike
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor, seen: torch.Tensor, chars: torch.Tensor | None = None) -> torch.Tensor:
        if self.emb is not None:
            features = torch.cat([features, self.emb(chars).flatten(1)], dim=1)
        return F.log_softmax(self.net(features).masked_fill(~seen, -math.inf), dim=1)

    @classmethod
    def from_state(cls, context: int, state: dict[str, torch.Tensor]) -> "Gate":
        """The gate these weights were saved from (its sizes read off them: a run saved before
        the gate read characters loads as it was)."""
        vocab_size, emb_dim = state["emb.weight"].shape if "emb.weight" in state else (0, 0)
        try:
            gate = cls(context, state["net.0.weight"].shape[0], vocab_size, emb_dim)
            gate.load_state_dict(state)
        except (KeyError, RuntimeError) as e:
            raise ValueError(f"the kept gate does not fit a model of {context} characters: {e}") from None
        return gate.eval()


def default_gate(counts: NGramCounts, context: int) -> Gate:
    """A fresh gate for these counts: one that reads the context's characters where they were
    counted over at least CHARS_MIN_EXAMPLES training examples, one of the counts alone below."""
    if int(counts.raw[0].context_totals[0]) >= CHARS_MIN_EXAMPLES:  # the empty context's total: every example
        return Gate(context, HIDDEN, counts.vocab_size, EMB_DIM)
    return Gate(context, COUNTS_HIDDEN)


class InterpolatedCounts:
    """Kneser-Ney's distributions of orders 0..`context`, weighed per context by a Gate (the
    module doc). Built on NGramCounts counted to at least `context`, untrained until `fit`.
    Scores the lecture's X (N, k) with targets Y (N,), or an Examples, like ngram.NGramModel."""

    method = "learned"
    smoothing = None  # no discount: the network's weights stand for it
    labels = 0

    def __init__(self, counts: NGramCounts, context: int, gate: Gate | None = None):
        if not 1 <= context <= counts.max_context:
            raise ValueError(f"context must be in 1..{counts.max_context} (what was counted), got {context}")
        if any(table is None for table in counts.raw[:context + 1]):
            raise ValueError("these counts were kept for Kneser-Ney only: the learned model reads every order's")
        self.counts, self.context, self.vocab_size = counts, context, counts.vocab_size
        self.gate = gate if gate is not None else default_gate(counts, context)
        self.fit_steps, self.fit_seconds = 0, 0.0  # seconds of training steps (not torch's first optimizer)
        self._scored: tuple | None = None  # (fit_steps, ids, starts, log-probs) of the last Examples scored

    # ------------------------------------------------------------------------------------
    # What a context's counts say

    def components(self, context_ids: list[np.ndarray], targets: np.ndarray, leave_one_out: bool = False):
        """(log-probs of the targets under every distribution (N, 2k + 2), the network's
        features (N, 3k + 2), which distributions have a seen context (N, 2k + 2)), float32
        tensors; with `leave_one_out`, each example's own occurrence taken out of the counts."""
        k, n, V = self.context, targets.shape[0], self.vocab_size
        y = targets[:, None]
        raw = [self.counts.raw[j].look_up(context_ids[j], y) for j in range(k + 1)]
        cont = [self.counts.continuation[j].look_up(context_ids[j], y) for j in range(k)]
        log_probs, features, seen = [], [], []
        raw_once = []
        for count, total, followers in raw:
            count = count[:, 0].astype(np.float64)
            total, followers = total.astype(np.float64), followers.astype(np.float64)
            raw_once.append(count == 1)
            if leave_one_out:
                followers = followers - (count == 1)
                count, total = count - 1, total - 1
            log_probs.append(_log_ratio(count, total))
            seen.append(total > 0)
            features += [np.log1p(total), np.log1p(followers)]
        for j, (count, total, _) in enumerate(cont):
            count, total = count[:, 0].astype(np.float64), total.astype(np.float64)
            if leave_one_out:  # (h_j, c) loses the left context of this example where it was its only occurrence
                gone = raw_once[j + 1]
                count, total = count - gone, total - gone
            log_probs.append(_log_ratio(count, total))
            seen.append(total > 0)
            features.append(np.log1p(total))
        log_probs.append(np.full(n, -math.log(V)))
        seen.append(np.ones(n, dtype=bool))
        as_tensor = lambda columns, dtype: torch.from_numpy(np.stack(columns, axis=1)).to(dtype)  # noqa: E731
        return as_tensor(log_probs, torch.float32), as_tensor(features, torch.float32), as_tensor(seen, torch.bool)

    def inputs(self, X, Y=None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
        """The context ids of every order, the targets and, where the gate reads them, the
        contexts' characters (N, k; oldest first)."""
        if isinstance(X, Examples):
            if Y is not None:
                raise ValueError("examples carry their own targets: pass no Y")
            targets, column = X.ids.astype(np.int64), example_columns(X)
        else:
            contexts, targets = as_ids(X, "X"), as_ids(Y, "Y")
            if contexts.ndim != 2 or contexts.shape[1] != self.context or targets.shape != (contexts.shape[0],):
                raise ValueError(f"need X of shape (N, {self.context}) and Y of shape (N,), got "
                                 f"{tuple(contexts.shape)} and {tuple(targets.shape)}")
            check_range(contexts, self.vocab_size)
            column = array_columns(contexts)
        check_range(targets, self.vocab_size)
        chars = None
        if self.gate.emb_dim:
            chars = np.stack([column(j) for j in range(self.context, 0, -1)], axis=1).astype(np.int32)
        return self.counts.context_ids(column, targets.shape[0], self.context), targets, chars

    # ------------------------------------------------------------------------------------
    # Training

    def fit(self, train: Examples, seconds: float | None = None, steps: int | None = None, batch_size: int = 512,
            lr: float = 2e-3, seed: int = 0) -> "InterpolatedCounts":
        """Train the gate on `train` (the split the counts were counted on) with leave-one-out
        counts, for `seconds` or `steps`, whichever ends first, and at most MAX_PASSES passes
        over `train`; the learning rate drops tenfold for the last fifth."""
        if seconds is None and steps is None:
            raise ValueError("give seconds or steps")
        most = max(1, MAX_PASSES * len(train) // batch_size)
        steps = most if steps is None else min(steps, most)
        rng = np.random.default_rng(seed)
        optimizer = torch.optim.Adam(self.gate.parameters(), lr=lr)
        started = time.perf_counter()
        self.gate.train()
        with using_threads(1):  # a network this small only waits for more threads (14% fewer steps on 2)
            step = self._fit_steps(train, optimizer, rng, started, seconds, steps, batch_size, lr)
        self.gate.eval()
        self.fit_steps += step
        self.fit_seconds += time.perf_counter() - started
        return self

    def _fit_steps(self, train: Examples, optimizer, rng, started: float, seconds: float | None, steps: int | None,
                   batch_size: int, lr: float) -> int:
        step = 0
        while True:
            done = max(step / steps if steps else 0.0, (time.perf_counter() - started) / seconds if seconds else 0.0)
            if done >= 1.0:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr * (0.1 if done > 0.8 else 1.0)
            positions = rng.integers(0, len(train), batch_size)
            contexts = train.contexts(positions, self.context).astype(np.int64)
            ids = self.counts.context_ids(array_columns(contexts), batch_size, self.context)
            log_probs, features, seen = self.components(ids, train.targets(positions).astype(np.int64), True)
            loss = -torch.logsumexp(self.gate(features, seen, torch.from_numpy(contexts)) + log_probs, dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        return step

    # ------------------------------------------------------------------------------------
    # Probabilities

    def target_log_probs(self, X, Y=None) -> torch.Tensor:
        """log P(target | context) of every example (float64). The scores of the last Examples
        are remembered until the gate trains again: a run scores its dev split to choose this
        model over Kneser-Ney, then again to fit the mixture's weight (mixture.py), each time
        seconds on a big list."""
        if isinstance(X, Examples) and self._scored is not None and self._scored[0] == self.fit_steps:
            _, ids, starts, out = self._scored
            if np.array_equal(ids, X.ids) and np.array_equal(starts, X.starts):
                return out.clone()
        context_ids, targets, chars = self.inputs(X, Y)
        out = torch.empty(targets.shape[0], dtype=torch.float64)
        with torch.no_grad():
            for i in range(0, targets.shape[0], CHUNK):
                log_probs, features, seen = self.components([ids[i:i + CHUNK] for ids in context_ids],
                                                            targets[i:i + CHUNK])
                chunk_chars = None if chars is None else torch.from_numpy(chars[i:i + CHUNK].astype(np.int64))
                out[i:i + CHUNK] = torch.logsumexp(self.gate(features, seen, chunk_chars) + log_probs, dim=1).double()
        if isinstance(X, Examples):
            self._scored = (self.fit_steps, X.ids.copy(), X.starts.copy(), out.clone())
        return out

    def nll(self, X, Y=None) -> float:
        """Mean negative log-likelihood in nats per character."""
        return float(-self.target_log_probs(X, Y).mean())

    def probs(self, contexts) -> torch.Tensor:
        """P(. | context) for contexts (N, k): (N, V) float64 rows that sum to one."""
        contexts = as_ids(contexts, "contexts")
        if contexts.ndim != 2 or contexts.shape[1] != self.context:
            raise ValueError(f"contexts must have shape (N, {self.context}), got {tuple(contexts.shape)}")
        check_range(contexts, self.vocab_size)
        n, k = contexts.shape[0], self.context
        context_ids = self.counts.context_ids(array_columns(contexts), n, k)
        _, features, seen = self.components(context_ids, np.zeros(n, dtype=np.int64))
        with torch.no_grad():
            weights = self.gate(features, seen, torch.from_numpy(contexts)).exp().double().numpy()
        rows = np.repeat(weights[:, -1:] / self.vocab_size, self.vocab_size, axis=1)
        tables = [(self.counts.raw[j], j) for j in range(k + 1)] + [(self.counts.continuation[j], k + 1 + j)
                                                                  for j in range(k)]
        for table, component in tables:
            ids = context_ids[component if component <= k else component - k - 1]
            row, char, count = table.entries(ids)
            totals = table.context_totals[ids[row]]
            rows[row, char] += weights[row, component] * count / totals  # a table's pairs are distinct
        return torch.from_numpy(rows)

    # ------------------------------------------------------------------------------------
    # Keeping

    def kept(self) -> dict[str, np.ndarray]:
        """What this model reads, by name (a run's RUN/counts.safetensors): the counts of every
        order (NGramCounts.kept) and the gate's weights."""
        arrays = self.counts.kept(self.context, every_order=True)
        arrays.update({f"gate.{name}": value.detach().numpy() for name, value in self.gate.state_dict().items()})
        return arrays

    @classmethod
    def from_kept(cls, arrays: dict[str, np.ndarray], vocab_size: int, context: int) -> "InterpolatedCounts":
        """The model read back from `kept()`; a missing or inconsistent array is a ValueError
        (or KeyError)."""
        gate = Gate.from_state(context, {name[len("gate."):]: torch.from_numpy(np.asarray(value))
                                         for name, value in arrays.items() if name.startswith("gate.")})
        counts = NGramCounts.from_kept({k: v for k, v in arrays.items() if not k.startswith("gate.")}, vocab_size,
                                       context)
        return cls(counts, context, gate)

    def __repr__(self) -> str:
        return f"InterpolatedCounts(context={self.context}, vocab_size={self.vocab_size}, fit_steps={self.fit_steps})"


# --------------------------------------------------------------------------------------------
# Training beside: the gate trained in a process of its own (jobs.py)

LEARNER = "from makemore.interpolation import learner_main; learner_main()"


class Apart:
    """The gate of an InterpolatedCounts training in a process of its own (fit_apart)."""

    def __init__(self, context: int, folder: tempfile.TemporaryDirectory, child, job: Path, result: Path):
        self.context, self.folder, self.child, self.job, self.result_path = context, folder, child, job, result
        self._counts: NGramCounts | None = None

    def counts(self) -> NGramCounts:
        """The counts it was given, read back from its job: the caller need not keep its own
        while the learner trains. Read before `result` or `cancel` removes the job."""
        if self._counts is None:
            kept, vocab_size, context = jobs.load(self.job)[:3]
            self._counts = NGramCounts.from_kept({k: v for k, v in kept.items() if not k.startswith("gate.")},
                                                 vocab_size, context)
        return self._counts

    def result(self) -> "InterpolatedCounts":
        """The trained model, once its process has ended; a RuntimeError saying why where it
        failed (`counts` still holds the counts)."""
        try:
            with jobs.passing_signals([self.child]):
                self.child.wait()
            outcome = jobs.outcome(self.result_path, self.child.returncode, "the learned count model")
            self.counts()
        finally:
            self.folder.cleanup()
        if outcome[0] != "ok":
            raise RuntimeError(outcome[1])
        _, state, steps = outcome
        gate = Gate.from_state(self.context, {name: torch.from_numpy(value) for name, value in state.items()})
        model = InterpolatedCounts(self.counts(), self.context, gate)
        model.fit_steps = steps
        return model

    def cancel(self) -> None:
        """Stop it (its run ended otherwise than completed) and forget it."""
        if self.child.poll() is None:
            self.child.terminate()
            self.child.wait()
        self.folder.cleanup()


def fit_apart(model: InterpolatedCounts, train: Examples, seconds: float | None = None, steps: int | None = None,
              seed: int = 0) -> Apart:
    """Start `model.fit(train, seconds, steps, seed=seed)` in a process of its own on one thread
    (its seconds counted from now): a budget run trains it so beside its neural model, on the
    core the model's step leaves idle (fit.py). The model given stays as it is; `Apart.result()`
    returns the trained one. The process holds a second copy of the counts (on wordfreq's words
    about 0.6 GiB with torch's own), so it does no more than train: scoring is left to the caller,
    once it has ended."""
    if seconds is None and steps is None:
        raise ValueError("give seconds or steps")
    folder = tempfile.TemporaryDirectory(prefix="makemore-learner-")  # 0700: only this user reads the job
    job, result = Path(folder.name) / "job.pickle", Path(folder.name) / "result.pickle"
    deadline = None if seconds is None else time.time() + seconds
    jobs.dump(job, (model.kept(), model.vocab_size, model.context, train, deadline, steps, seed))
    return Apart(model.context, folder, jobs.start(LEARNER, [job, result], threads=1), job, result)


def learner_main() -> None:
    """The process of fit_apart (LEARNER): argv holds the job and where to put its outcome,
    ("ok", the gate's weights, steps), or ("user", message) / ("error", traceback)."""
    job, result = sys.argv[1:3]
    try:
        torch.set_num_threads(1)
        kept, vocab_size, context, train, deadline, steps, seed = jobs.load(job)
        model = InterpolatedCounts.from_kept(kept, vocab_size, context)
        del kept  # what the model does not hold itself: its memory is the machine's, beside the run's
        seconds = None if deadline is None else max(deadline - time.time(), 1e-3)
        model.fit(train, seconds=seconds, steps=steps, seed=seed)
        outcome = ("ok", {name: value.detach().numpy() for name, value in model.gate.state_dict().items()},
                   model.fit_steps)
    except KeyboardInterrupt:
        outcome = ("user", "the learned count model was interrupted")
    except Exception:  # the parent reports it
        outcome = ("error", traceback.format_exc())
    jobs.dump(Path(result), outcome)


def _log_ratio(count: np.ndarray, total: np.ndarray) -> np.ndarray:
    """log(count / total), -inf where the count is 0 (or the context unseen: masked anyway)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((count > 0) & (total > 0), np.log(np.maximum(count, 1) / np.maximum(total, 1)), -math.inf)

