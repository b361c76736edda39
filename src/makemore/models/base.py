"""What every makemore model is: a config dataclass and an nn.Module with one interface.

The interface is that of Karpathy's makemore.py, for our examples: a model reads the
`block_size` characters before a position (boundary-padded on the left, as the lecture builds
its contexts) and returns logits for the character at that position:

    logits, loss = model(idx, targets)     idx (B, block_size) int64, logits (B, vocab_size)

so training, evaluation, sampling and scoring never ask which model they run. A model of a
labelled list (cfg.labels > 0, `--labels`) reads one more column in front: idx (B, 1 + block_size),
column 0 the item's label id and the characters after it, so that the label travels with the
context through every minibatch, chunk and predictor unchanged; `read_labels` splits it off and
looks up the label's learned embedding. The MLP concatenates that embedding with the context's
(Bengio et al.'s argument for characters, that similar contexts share strength through learned
vectors, applied to lists); a sequence model adds it to the input at every position, as it adds
the position's embedding (models/labels in docs/labels.md says why and what it measured). A model may
compute its *training* loss over more predictions than the last one (a sequence model predicts
every position of its window at once, as makemore.py and nanoGPT train); in eval mode the loss
is always the mean NLL of the targets given, the figure every model is compared on.

A model whose output layer is an adaptive softmax (models/softmax.py) returns log-probabilities
as its logits (a normalised distribution: log_softmax leaves them as they are), and in training
with targets returns None for them unless `needs_logits` is set: computing the full (B, V)
distribution is the cost its loss avoids. Training asks for them only for a teacher's term
(engines.AutogradEngine).

A new model is one module in this package defining `Config` (a dataclass subclass of
ModelConfig with the model's own fields, each with a `help` in its metadata: the CLI makes
them flags), `MODEL` (its subclass of Model, whose `Config` is that dataclass), `PRESETS` (named
recipes) and `DEFAULT_PRESET` (and, to be tuned, `SEARCH_SPACE` and `SEARCH_FIXED`), plus one
line in models/__init__.py.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .softmax import AdaptiveSoftmax


def setting(default, help: str, **kwargs):
    """A config field with the help text of its command-line flag and the values it takes:
    `min`/`max` (inclusive), `above`/`below` (exclusive), `choices`; a bound may be a function
    of nothing (the machine's cores). check_fields enforces them, for the CLI and the API alike."""
    return field(default=default, metadata={"help": help, **kwargs})


# What a field's annotation asks for, in words; other annotations (tuples) are not checked.
KINDS = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "True or False"}


def check_type(name: str, annotation, value) -> None:
    """One UserError naming the setting where `value` is not what its field's annotation says
    (a number given as text through the Python API, a fraction for a count): the arithmetic it
    meets later would fail deep inside, or quietly round it."""
    kind = (annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")).replace(" ", "")
    if kind.endswith("|None"):
        if value is None:
            return
        kind = kind[:-len("|None")]
    if kind not in KINDS:
        return
    number = not isinstance(value, (bool, np.bool_))
    ok = {"int": number and isinstance(value, (int, np.integer)),
          "float": number and isinstance(value, (int, float, np.integer, np.floating)),
          "str": isinstance(value, str), "bool": isinstance(value, (bool, np.bool_))}[kind]
    if not ok:
        raise UserError(f"{name.replace('_', '-')} must be {KINDS[kind]}, got {value!r}")


def check_fields(cfg) -> None:
    """Every field of a config dataclass of the type its annotation names and within the values
    its `setting` declares: one UserError naming the flag otherwise."""
    for f in fields(cfg):
        value, meta = getattr(cfg, f.name), f.metadata
        check_type(f.name, f.type, value)
        flag = f.name.replace("_", "-")
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise UserError(f"{flag} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        bounds = {k: (v() if callable(v) else v) for k, v in meta.items() if k in ("min", "max", "above", "below")}
        if bounds.get("below") == float("inf"):  # a finite number: said as such below
            del bounds["below"]
            if value == float("inf"):
                raise UserError(f"{flag} must be a finite number, got {value}")
        ok = (value == value and ("min" not in bounds or value >= bounds["min"])
              and ("max" not in bounds or value <= bounds["max"]) and ("above" not in bounds or value > bounds["above"])
              and ("below" not in bounds or value < bounds["below"]))
        if not ok:
            if "min" in bounds and "max" in bounds:
                wanted = f"between {_number(bounds['min'])} and {_number(bounds['max'])}"
            elif "min" in bounds and "below" in bounds:
                wanted = f"in [{_number(bounds['min'])}, {_number(bounds['below'])})"
            elif bounds.get("above") == 0 and len(bounds) == 1:
                wanted = "positive"
            else:
                low = (f"at least {_number(bounds['min'])}" if "min" in bounds else
                       f"above {_number(bounds['above'])}" if "above" in bounds else "")
                high = (f"at most {_number(bounds['max'])}" if "max" in bounds else
                        f"below {_number(bounds['below'])}" if "below" in bounds else "")
                wanted = " and ".join(x for x in (low, high) if x)
            raise UserError(f"{flag} must be {wanted}, got {_number(value)}")


def _number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


@dataclass
class ModelConfig:
    """Settings every model has: the vocabulary (from the data) and the context it reads."""

    name: ClassVar[str] = ""
    vocab_size: int = setting(27, "characters in the vocabulary, boundary token included (from the data)", min=1)
    block_size: int = setting(3, "characters of context", min=1)
    labels: int = setting(0, "labels the model conditions on (from the data: --labels); 0 for none", min=0)

    def decided(self) -> "ModelConfig":
        """This config with each `auto` setting decided (make_configs returns it so, and a run
        records it so): what a saved run means does not change with the rule that decided it."""
        return self

    def validate(self) -> None:
        check_fields(self)


@contextlib.contextmanager
def seeded(seed: int):
    """Run the body with torch's global generator seeded, then restore it: modules that draw
    their initial weights from it (nn.Linear, nn.Embedding) start the same for the same seed,
    and the caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Model(nn.Module):
    """Base of every model: forward(idx, targets=None) -> (logits, loss); see the module doc."""

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    # True for a model that reads its window as makemore.py's sequence (window_layout below):
    # it takes any width up to block_size, and padding before the start changes nothing.
    sequence: ClassVar[bool] = False
    # Whether forward(idx, targets) in training must return the logits even where the model
    # need not compute them for its loss (see the module doc); set by the engine that needs them.
    needs_logits: bool = False
    # A sequence model drops the leading columns that are padding in every row of a batch
    # (trim_padding): less work on a CPU; on a GPU it reads their count back to the host, which
    # stalls the step and keeps it from being captured as a graph (graphs.py), and an exported
    # graph cannot hold a width that depends on the data (export.py): those turn it off.
    trim_windows: bool = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg

    def label_embedding(self, dim: int) -> None:
        """For a labelled model, the (labels, dim) table of label embeddings, `label_emb`; call it
        after the model's other layers, so that an unlabelled model draws the same weights."""
        self.label_emb = nn.Embedding(self.cfg.labels, dim) if self.cfg.labels else None

    def read_labels(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the characters of idx, each row's label embedding (B, dim) or None): see the module doc."""
        if not self.cfg.labels:
            return idx, None
        return idx[:, 1:], self.label_emb(idx[:, 0])

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # Parameters whose gradients are sparse (a hashed table, read a few rows per example): the
    # engines step them with their optimizer's sparse form (optimizers/__init__.py).
    sparse_parameters: tuple[str, ...] = ()

    def decays(self, name: str, p: torch.Tensor) -> bool:
        """Whether weight decay applies to this parameter: matrices and embedding tables do,
        biases and normalisation gains do not (nanoGPT's rule: by rank, not by name)."""
        return p.dim() >= 2

    def logits_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """contexts (N, block_size) -> logits (N, vocab_size) for inference (eval mode, no
        gradient). A model may return a faster function than its forward (see mlp.py); it is a
        snapshot of the current weights."""
        if self.sequence:
            return lambda ctx: sequence_logits(self, ctx)

        def logits(ctx: torch.Tensor) -> torch.Tensor:
            return self(ctx)[0]

        return logits

    def target_log_probs_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """(contexts (N, block_size), targets (N,)) -> log p(target | context) (N,) for scoring
        (eval mode, no gradient), where the model computes it faster than by logits_fn's whole
        distribution (an adaptive softmax reads only each target's cluster); None otherwise."""
        return None

    def embedding_table(self) -> torch.Tensor | None:
        """The (vocab_size, d) table of character embeddings, for `makemore embeddings`."""
        return None

    def observe_training_data(self, train) -> None:
        """Called once on a freshly built model, before its first step, with its training
        split (data.Examples): what a model takes from the data's statistics rather than by
        gradient (an adaptive softmax's frequency order of the characters). It is saved with
        the weights (a buffer), so a resumed or loaded model is not called again. This default
        fits the frequency order of any AdaptiveSoftmax the model holds, and starts its biases
        at the characters' unigram distribution (softmax.fit_output_prior)."""
        heads = [m for m in self.modules() if isinstance(m, AdaptiveSoftmax)]
        if heads:
            counts = np.bincount(train.ids, minlength=self.cfg.vocab_size)
            for head in heads:
                head.fit_output_order(counts, prior=True)


def last_position_loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
    return None if targets is None else F.cross_entropy(logits, targets)


# ----------------------------------------------------------------------------------------
# Sequence models (rnn, gru, bow, transformer): windows as makemore.py's sequences


def window_layout(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each context row, where its sequence starts, and each position's index in it.

    A context is the word so far, left-padded with the boundary token (id 0), which never
    occurs inside a word: a row's padding is its zeros. makemore.py feeds a sequence model
    <START> c1 c2 ... at positions 0, 1, 2, ...; the last padding token plays <START>, so a
    row with P padding tokens starts at column max(P - 1, 0) and column t is position
    t - start (negative: before the sequence, to be ignored). Returns (start (B,), pos (B, T)).
    """
    T = idx.shape[1]
    padding = (idx == 0).sum(dim=1)
    start = (padding - 1).clamp_(min=0)
    pos = torch.arange(T, device=idx.device)[None, :] - start[:, None]
    return start, pos


def trim_padding(idx: torch.Tensor) -> torch.Tensor:
    """idx without its leading columns that are before every row's start. They change no
    output of a sequence model (nothing reads a column before its row's start, and positions
    count from the start) and no loss (their targets are padding), so dropping them only
    saves work: most windows of a batch hold a short prefix of a word. Where the width trimmed,
    which depends on the data, cannot be (a CUDA graph, an exported graph) the model's
    `trim_windows` is turned off: the whole window gives the same outputs for any padding."""
    first = int(window_layout(idx)[0].min()) if idx.shape[0] else 0
    return idx[:, first:]


def causal_mask(start: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T, T) bool: may position t read position k? makemore.py's causal mask (k <= t),
    less the columns before the row's start (k >= start). A column before the start reads
    itself alone: its output is never used, and a row with no key would be a softmax of
    nothing (NaN)."""
    t = torch.arange(T, device=start.device)
    q, k = t[None, :, None], t[None, None, :]
    s = start[:, None, None]
    return ((k <= q) & (k >= s)) | ((q < s) & (k == q))


def embed_window(model: Model, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The input of makemore.py's attention models (transformer, BoW): each column's token
    embedding (model.wte) plus its position's (model.wpe), the label's embedding added at every
    position as a position's is. Returns (x (B, T, C), the window read, each row's start)."""
    idx, label = model.read_labels(idx)
    if idx.shape[1] > model.cfg.block_size:
        raise ValueError(f"a window of {idx.shape[1]} characters is longer than block_size {model.cfg.block_size}")
    window = trim_padding(idx) if model.trim_windows else idx
    start, pos = window_layout(window)
    # a column before the start gets position 0's embedding; nothing reads it
    x = model.wte(window) + model.wpe(pos.clamp(min=0))
    if label is not None:
        x = x + label[:, None]
    return x, window, start


# Rows per forward call when a sequence model evaluates many windows (sequence_logits).
SEQUENCE_SLICE = 1024


def sequence_logits(model: Model, ctx: torch.Tensor) -> torch.Tensor:
    """model(ctx)'s logits, computed slice by slice over the rows sorted by where their
    sequence starts: each slice is then trimmed of the columns its rows all leave out
    (trim_padding). A window of names is mostly padding (words of ~6 characters, windows of 16),
    so evaluating a split this way does about half the work of one call on the whole chunk."""
    if ctx.shape[0] <= SEQUENCE_SLICE:
        return model(ctx)[0]
    order = torch.argsort(window_layout(ctx[:, 1:] if model.cfg.labels else ctx)[0])
    out = None
    for i in range(0, ctx.shape[0], SEQUENCE_SLICE):
        rows = order[i:i + SEQUENCE_SLICE]
        logits = model(ctx[rows])[0]
        if out is None:
            out = logits.new_empty((ctx.shape[0], logits.shape[1]))
        out[rows] = logits
    return out


def dense_targets(idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The next character at every column of the window: idx shifted left, then the target;
    -1 (ignored by cross_entropy) where the next character is still padding."""
    nxt = torch.cat([idx[:, 1:], targets[:, None]], dim=1)
    padding = torch.cat([idx[:, 1:] == 0, torch.zeros_like(targets, dtype=torch.bool)[:, None]], dim=1)
    return nxt.masked_fill(padding, -1)  # no boolean indexing: nothing read back to the host (graphs.py)


def sequence_output(model: nn.Module, head: nn.Module, states: torch.Tensor, window: torch.Tensor,
                    targets: torch.Tensor | None, norm: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """(logits, loss) of a sequence model from its states (B, T, hidden) over the window, read
    out by `head` (its lm_head: nn.Linear, or an AdaptiveSoftmax) after `norm`, if any.
    Training: the loss is the mean NLL over every position of the window (makemore.py's and
    nanoGPT's objective, many predictions per example) and the logits are every column's,
    (B, T, vocab) for the window without its leading padding (trim_padding), which a teacher's
    targets are matched with (engines.AutogradEngine); an adaptive head returns them only if
    the model `needs_logits` (see the module doc). Eval: only the last position is read out
    and scored, as every model is."""
    if model.training and targets is not None:
        states = states if norm is None else norm(states)
        dense = dense_targets(window, targets)
        if isinstance(head, AdaptiveSoftmax):
            loss = head.nll(states, dense, ignore_index=-1)
            return (head.log_probs(states) if model.needs_logits else None), loss
        all_logits = head(states)  # (B, T, vocab)
        V = all_logits.shape[-1]
        loss = F.cross_entropy(all_logits.reshape(-1, V), dense.reshape(-1), ignore_index=-1)
        return all_logits, loss
    last = states[:, -1]
    logits = head(last if norm is None else norm(last))
    return logits, last_position_loss(logits, targets)


def init_normal_(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2's initialisation, as minGPT/nanoGPT use it: N(0, 0.02) weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)


__all__ = ["ModelConfig", "Model", "setting", "seeded", "window_layout", "trim_padding", "causal_mask",
           "sequence_logits",
           "dense_targets", "sequence_output",
           "last_position_loss", "init_normal_"]
