"""The fused engine: the MLP's training step with fused.py's hand-written backward pass, and
the optimizer's update, in place on the model's tensors (the engine interface of engines.py).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from . import optimizers
from .config import TrainConfig
from .fused import Params, Workspace, column_major, flat_buffer, forward_backward, unsupported_reason, views
from .models.mlp import MLP, label_inputs, param_shapes

MASK_BITS = 16  # dropout draws 16 random bits per unit (see draw_masks)


class FusedEngine:
    """Forward, hand-written backward and optimizer update for K >= 1 MLPs of one shape.

    The engine interface (engines.py): step(idx (K, B, T), y (K, B), lrs (K,)) -> the K
    minibatch losses before the update. The math of engines.AutogradEngine (the same
    optimizers, weight decay on C and the W's), with two differences: dropout masks come from a
    NumPy generator seeded with each member's seed (they cannot equal torch's), and results
    agree with autograd to float rounding, not bit for bit.

    The members' parameters live in one (K, P) buffer, row k holding member k's flat layout
    (W_l followed by b_l, so [dW; db] is one product); each model's tensors are re-pointed at
    views of its row, so the models see their weights change as the engine steps (evaluation
    and checkpoints use them as they are). They must not be replaced while the engine lives.

    K > 1 is a *population* (a seed ensemble, an lr sweep): the same ~35 NumPy calls a step
    takes for one model, made K times larger instead of K times more numerous, and each matrix
    product a batched one, (K, B, n) @ (K, n, m). What it saves is the fixed cost per call,
    not arithmetic (benchmarks/bench.py, item 4), so engines.make_engine uses it only while
    every product is small (`small_products`); rows are then padded to a multiple of emb_dim
    so that the K embedding tables form one (K*P/E, E) table, and one take() gathers every
    member's embeddings, one np.add.at scatters every member's dC. Member k computes exactly
    what a solo run with its seed computes (tests/test_population.py).
    """

    name = "fused"

    def __init__(self, models: Sequence[MLP], train_cfgs: Sequence[TrainConfig]):
        if len(models) != len(train_cfgs) or not models:
            raise ValueError(f"need one train config per model, got {len(models)} models and {len(train_cfgs)} configs")
        cfg = models[0].cfg
        for model, train_cfg in zip(models, train_cfgs):
            reason = unsupported_reason(model.cfg, train_cfg)
            if reason is not None:
                raise ValueError(f"FusedEngine does not support this run: {reason}")
            if model.cfg != cfg:
                raise ValueError("the members of one engine must share one model config")
        if len({c.optimizer for c in train_cfgs}) != 1:
            raise ValueError("the members of one engine must share one optimizer")
        K, E = len(models), cfg.emb_dim
        self.models, self.K, self.cfg = list(models), K, cfg
        self.names = list(param_shapes(cfg))
        dtypes = set()
        for model in models:
            tensors = dict(model.named_parameters())
            if sorted(tensors) != sorted(self.names):
                raise ValueError(f"model parameters {sorted(tensors)} do not match its config {self.names}")
            for name, t in tensors.items():
                if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
                    raise ValueError(f"FusedEngine needs float32/float64 CPU tensors; {name} is {t.dtype} on {t.device}")
                dtypes.add(t.dtype)
        if len(dtypes) != 1:
            raise ValueError(f"FusedEngine needs one dtype for all parameters, got {dtypes}")
        self.dtype = torch.empty(0, dtype=dtypes.pop()).numpy().dtype
        align = E if K > 1 else 1
        self.flat, self.arrays = flat_buffer(cfg, self.dtype, members=K, align=align)
        with torch.no_grad():
            for k, model in enumerate(models):
                for n, p in model.named_parameters():
                    self.arrays[n][k] = p.detach().numpy()
                    p.data = torch.from_numpy(self.arrays[n][k])  # the model now reads row k
        self.grad_flat, grad_arrays = flat_buffer(cfg, self.dtype, members=K, align=align)
        if K == 1:  # 2-D arrays: NumPy's matmul or torch.mm on plain matrices
            self.params = Params({n: a[0] for n, a in self.arrays.items()}, cfg)
            self.grads = Params({n: a[0] for n, a in grad_arrays.items()}, cfg, self.grad_flat[0])
        else:
            self.params = Params(self.arrays, cfg)
            self.rows = self.flat.shape[1] // E  # rows of the C table per member
            self.params.C = self.flat.reshape(-1, E)  # every member's C, one table (see the class doc)
            self.row_offset = (np.arange(K, dtype=np.intp) * self.rows).reshape(K, 1, 1)
            self.grads = Params(grad_arrays, cfg, self.grad_flat)
        optimizer = optimizers.get(train_cfgs[0].optimizer)
        self.optimizer = optimizer.Flat(lambda buf: views(cfg, buf), self.flat.shape, self.dtype, train_cfgs)
        self.weight_decay = np.array([c.weight_decay for c in train_cfgs])
        model_params = dict(models[0].named_parameters())
        self.decayed = [self.arrays[n] for n in self.names if models[0].decays(n, model_params[n])]
        self.dropout = float(cfg.dropout)
        self.drop_below, self.keep_scale = dropout_threshold(self.dropout)
        self.rngs = [np.random.default_rng(c.seed) for c in train_cfgs]
        self.teacher_weight = float(train_cfgs[0].teacher)  # shared by the members (train.SHARED)
        self.precision = train_cfgs[0].precision  # shared too
        self._workspaces: dict[int, Workspace] = {}
        # Called with the (K, P) gradient buffer between the backward pass and the update: the
        # data-parallel trainer averages it across processes there.
        self.grad_hook = None

    def _workspace(self, B: int) -> Workspace:
        ws = self._workspaces.get(B)
        if ws is None:
            K, H, L = self.K, self.cfg.hidden, self.cfg.layers
            dropout = self.dropout > 0
            if K == 1:
                ws = Workspace(self.cfg, B, self.dtype, dropout=dropout, precision=self.precision)
                lead = ()
            else:
                # float32: np.matmul on (K, B, n) stacks, one OpenBLAS product per member on this
                # thread; at the lecture's size it beat torch.matmul and torch.bmm (bench item 4)
                ws = Workspace(self.cfg, B, self.dtype, dropout=dropout, members=K, table_rows=K * self.rows,
                                precision=self.precision)
                ws.table_idx = np.empty((K, B, self.cfg.inputs), np.intp)
                lead = (K,)
            ws.masks = [None] * L
            if dropout:  # column-major per member, like the layers' buffers
                ws.keep = column_major(lead + (B, H), np.bool_)
                ws.masks = [column_major(lead + (B, H), self.dtype) for _ in range(L)]
                ws.member_masks = [ws.masks] if K == 1 else [[mask[k] for mask in ws.masks] for k in range(K)]
                ws.member_keep = [ws.keep] if K == 1 else list(ws.keep)
            self._workspaces[B] = ws
        return ws

    def step(self, idx: np.ndarray, y: np.ndarray, lrs: np.ndarray, teacher: np.ndarray | None = None) -> np.ndarray:
        """One minibatch update of every member; row k of idx (K, B, block_size), y (K, B), lrs
        (K,) and teacher (K, B, V) (the count model's distributions, with --teacher) is member
        k's. Returns each member's minibatch loss before the update."""
        K, B = y.shape
        ws = self._workspace(B)
        idx = label_inputs(idx, self.cfg)  # a labelled list's label: one more input, a row of C (models/mlp.py)
        if self.dropout > 0:
            for rng, keep, masks in zip(self.rngs, ws.member_keep, ws.member_masks):
                draw_masks(rng, self.drop_below, self.keep_scale, keep, masks)
        lrs = np.asarray(lrs, dtype=np.float64)
        folds_lr = self.optimizer.folds_lr  # SGD: every gradient comes out multiplied by its lr
        with np.errstate(all="ignore"):  # see forward_backward
            if K == 1:
                loss = forward_backward(self.params, self.grads, ws, idx[0], y[0], ws.masks,
                                         float(lrs[0]) if folds_lr else 1.0,
                                         None if teacher is None else teacher[0].astype(self.dtype, copy=False),
                                         self.teacher_weight)
                losses = np.array([loss])
            else:
                np.add(idx, self.row_offset, out=ws.table_idx)  # member k's characters are its rows of C
                scale = lrs.astype(self.dtype).reshape(K, 1) if folds_lr else 1.0
                forward_backward(self.params, self.grads, ws, ws.table_idx, y, ws.masks, scale,
                                  None if teacher is None else teacher.astype(self.dtype, copy=False),
                                  self.teacher_weight)
                losses = np.add.reduce(ws.nll, axis=1).astype(np.float64) / B
            if self.grad_hook is not None:
                self.grad_hook(self.grad_flat)
            if self.weight_decay.any():  # decoupled: p <- p * (1 - lr*wd), on C and the W's
                shrink = (1.0 - lrs * self.weight_decay).astype(self.dtype).reshape(K, 1, 1)
                for p in self.decayed:
                    p *= shrink
            self.optimizer.update(self.flat, self.grad_flat, lrs)
        return losses

    def freeze(self, k: int, weights: Mapping[str, torch.Tensor]) -> None:
        """Put `weights` in member k and keep them there (the loop steps it with lr 0): what a
        diverged member gets, so that its inf/NaN do not stay in the buffers."""
        for n in self.names:
            self.arrays[n][k] = weights[n].detach().cpu().numpy()
        if hasattr(self.optimizer, "reset"):
            self.optimizer.reset(k)

    # ---- checkpoints ----

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's optimizer state under the autograd engine's names (so that a run resumes
        with either engine) and, with dropout, its mask generator ('fused.dropout_rng')."""
        state = self.optimizer.state(k)
        if self.dropout > 0:
            state["fused.dropout_rng"] = _rng_to_tensor(self.rngs[k])
        return state

    def load_member_state(self, k: int, state: Mapping[str, torch.Tensor]) -> None:
        self.optimizer.load(k, state)
        if "fused.dropout_rng" in state:
            _rng_from_tensor(self.rngs[k], state["fused.dropout_rng"])


def dropout_threshold(p: float) -> tuple[int, float]:
    """(drop_below, keep_scale): dropout keeps a unit when its 16 random bits are >= drop_below,
    with probability (2^16 - drop_below) / 2^16, within 2^-17 of 1 - p; the scale is its
    exact inverse."""
    drop_below = min(round(p * 2**MASK_BITS), 2**MASK_BITS - 1)
    return drop_below, 2**MASK_BITS / (2**MASK_BITS - drop_below)


def draw_masks(rng: np.random.Generator, drop_below: int, keep_scale: float, keep: np.ndarray,
               masks: Sequence[np.ndarray]) -> None:
    """Inverted dropout: keep each unit with probability ~1-p and scale it by 1/P(keep).

    Fills each (B, H) mask in turn (and `keep`, a scratch (B, H) bool array), with uniform
    16-bit integers straight from the generator's raw 64-bit output (a quarter of the draws
    and a third of the time of `rng.random`); P(keep) = (2^16 - drop_below)/2^16.
    """
    B, H = keep.shape
    for mask in masks:
        scale = mask.dtype.type(keep_scale)
        bits = rng.bit_generator.random_raw(-(-B * H // 4)).view(np.uint16)[:B * H]
        np.greater_equal(bits.reshape(H, B).T, drop_below, out=keep)
        np.multiply(keep, scale, out=mask)


def _rng_to_tensor(rng: np.random.Generator) -> torch.Tensor:
    """PCG64's state (two 128-bit integers and a buffered 32-bit draw) as 6 int64 words."""
    s = rng.bit_generator.state
    low = 2**64 - 1
    words = [s["state"]["state"] >> 64, s["state"]["state"] & low,
             s["state"]["inc"] >> 64, s["state"]["inc"] & low, s["has_uint32"], s["uinteger"]]
    return torch.from_numpy(np.array(words, dtype=np.uint64).view(np.int64))


def _rng_from_tensor(rng: np.random.Generator, t: torch.Tensor) -> None:
    w = [int(v) for v in t.detach().cpu().numpy().astype(np.int64).view(np.uint64)]
    rng.bit_generator.state = {"bit_generator": "PCG64",
                               "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
                               "has_uint32": w[4], "uinteger": w[5]}
