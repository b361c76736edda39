"""What each training step is fed: its minibatch and its learning rate.

Minibatches are the lecture's `ix = torch.randint(0, Xtr.shape[0], (32,))` from a generator
seeded seed + 1; their contexts are gathered from the compact examples (data.Examples) a chunk
of steps at a time. The learning rate follows TrainConfig.schedule.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from .config import TrainConfig
from .data import Examples

# Minibatch contexts are gathered this many examples at a time (a chunk of steps).
GATHER_EXAMPLES = 1 << 16


def lr_at(cfg: TrainConfig, step: int, total: int | None = None) -> float:
    """Learning rate for update number `step` (0-based) of `total` (default cfg.steps; a budget
    run plans its own total, see budget.py)."""
    if total is not None and total != cfg.steps:
        cfg = replace(cfg, steps=total)
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":  # the lecture: 0.1 for the first 100k steps, then 0.01
        return cfg.lr if step < cfg.decay_at * cfg.steps else cfg.lr * cfg.decay_factor
    if cfg.schedule == "inverse":  # Bengio et al. (2003), section 3: eps_t = eps_0 / (1 + r t)
        return cfg.lr / (1.0 + cfg.decay_rate * step)
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    floor = cfg.lr * cfg.min_lr_frac
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Minibatches:
    """Each member's minibatches, drawn as the lecture draws them: torch.randint(0, n, (B,))
    from a generator seeded seed + 1, once per step. The CPU generator draws serially, so one
    draw of c*B indices equals c draws of B: we draw (and gather the contexts of) a chunk of
    steps at a time. [dist] `share`: which of each minibatch's B positions this process gathers
    (its slice of the global batch in data-parallel training; all of them otherwise).
    `whole_words`: draw from the windows that tile the words (Examples.word_windows), for a
    sequence model, which predicts every character of the window it reads: drawn from every
    position, a word's first characters would be predicted once per later window of the word,
    weighting the loss towards them; eval weighs every character once."""

    def __init__(self, examples: Examples, block_size: int, seeds: Sequence[int], B: int,
                 states: Sequence[torch.Tensor | None] | None = None, share: slice = slice(None),
                 whole_words: bool = False):
        self.pool = examples.word_windows(block_size) if whole_words else None
        self.examples, self.block_size, self.B = examples, block_size, B
        self.n = len(examples) if self.pool is None else len(self.pool)
        self.share = share
        self.generators = [torch.Generator().manual_seed(s + 1) for s in seeds]
        for g, state in zip(self.generators, states or []):
            if state is not None:
                g.set_state(state)
        self.chunk_steps = max(1, GATHER_EXAMPLES // B)
        self.first, self.steps_held, self.states = 0, 0, []
        self.idx = self.y = self.positions_held = None

    def at(self, step: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """(K, B, block_size) contexts and (K, B) targets of update `step` (0-based); chunks
        never reach past update `last`."""
        i = step - self.first
        if self.idx is None or i >= self.steps_held:
            self.first, i = step, 0
            c = min(self.chunk_steps, last - step + 1)
            self.states = [g.get_state() for g in self.generators]
            positions = torch.stack([torch.randint(0, self.n, (c * self.B,), generator=g)
                                     for g in self.generators]).numpy()  # (K, c*B)
            K = len(self.generators)
            if self.pool is not None:
                positions = self.pool[positions]
            positions = positions.reshape(K, c, self.B)[:, :, self.share]  # [dist] this process's share
            b = positions.shape[2]
            X, Y = self.examples.batch(positions.reshape(-1), self.block_size)
            self.idx = X.reshape(K, c, b, X.shape[1])  # a labelled list's label in column 0
            self.y = Y.reshape(K, c, b)
            self.positions_held = positions
            self.steps_held = c
        return self.idx[:, i], self.y[:, i]

    def positions(self, step: int) -> np.ndarray:
        """(K, B) positions in the split of update `step`'s examples (after `at(step, ...)`)."""
        return self.positions_held[:, step - self.first]

    def window_positions(self, positions: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        return self.examples.window_positions(positions, block_size)

    def state(self, k: int, steps: int) -> torch.Tensor:
        """Member k's generator state after `steps` updates, as a solo run saves it (rng.batch)."""
        used = steps - self.first
        if self.idx is None or used >= self.steps_held:
            return self.generators[k].get_state()
        g = torch.Generator()
        g.set_state(self.states[k])
        if used > 0:
            torch.randint(0, self.n, (used * self.B,), generator=g)
        return g.get_state()


class DeviceMinibatches:
    """Minibatches drawn and gathered where the model trains (a GPU): the split's ids, each
    position's word start and (for a sequence model) the windows that tile the words live on the
    device; each member's positions come from a generator on the device seeded seed + 1, one
    draw of B per step, so a run is reproducible for a fixed seed (a CUDA generator's stream is
    not the CPU's: a run on a GPU sees other minibatches than one on a CPU). Nothing crosses to
    the host per step. The interface is Minibatches': `at`, `positions`, `state`, and
    `window_positions` for a sequence model's teacher."""

    def __init__(self, examples: Examples, block_size: int, seeds: Sequence[int], B: int, device,
                 states: Sequence[torch.Tensor | None] | None = None, whole_words: bool = False):
        self.device, self.block_size, self.B = torch.device(device), block_size, B
        self.examples = examples
        n = len(examples)
        lengths = np.diff(np.append(examples.starts, n))
        self.ids = torch.from_numpy(examples.ids.astype(np.int64)).to(self.device)
        self.start_of = torch.from_numpy(np.repeat(examples.starts, lengths)).to(self.device)  # word start per position
        self.label_of = (None if examples.labels is None  # a labelled list: each position's label
                         else torch.from_numpy(np.repeat(examples.labels, lengths)).to(self.device))
        self.pool = (torch.from_numpy(examples.word_windows(block_size)).to(self.device) if whole_words else None)
        self.n = n if self.pool is None else len(self.pool)
        self.generators = [torch.Generator(device=self.device).manual_seed(s + 1) for s in seeds]
        for g, state in zip(self.generators, states or []):
            if state is not None:
                g.set_state(state)
        self.offsets = torch.arange(-block_size, 0, device=self.device)
        self.step_held, self.positions_held = None, None

    def at(self, step: int, last: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, B, block_size) contexts and (K, B) targets of update `step`, on the device."""
        positions = torch.stack([torch.randint(0, self.n, (self.B,), generator=g, device=self.device)
                                 for g in self.generators])  # (K, B)
        if self.pool is not None:
            positions = self.pool[positions]
        self.step_held, self.positions_held = step, positions
        before = positions[..., None] + self.offsets  # (K, B, T)
        ctx = self.ids[before.clamp(min=0)]
        ctx = ctx.masked_fill(before < self.start_of[positions][..., None], 0)  # before the word: padding
        if self.label_of is not None:
            ctx = torch.cat([self.label_of[positions][..., None], ctx], dim=-1)
        return ctx, self.ids[positions]

    def positions(self, step: int) -> torch.Tensor:
        return self.positions_held

    def window_positions(self, positions: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """data.Examples.window_positions, on the device."""
        predicted = positions[..., None] + torch.arange(1 - block_size, 1, device=self.device)
        valid = predicted >= self.start_of[positions][..., None]
        return torch.where(valid, predicted, positions[..., None]), valid

    def state(self, k: int, steps: int) -> torch.Tensor:
        """Member k's generator state after `steps` updates (drawn one step at a time: its own)."""
        return self.generators[k].get_state()
