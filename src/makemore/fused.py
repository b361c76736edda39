"""The fused engine: one training step of the MLP with a hand-written backward pass.

The model is the neural probabilistic language model of Bengio, Ducharme, Vincent & Jauvin,
"A Neural Probabilistic Language Model" (JMLR 2003), exactly as `model.MLP` computes it:

    emb    = C[idx]                         (B, T, E)   embedding lookup, T = block_size
    x      = emb.view(B, T*E)                           concatenation
    hpre_l = h_{l-1} @ W_l + b_l            (h_0 = x)   for each hidden layer l = 1..L
    h_l    = tanh(hpre_l) [* dropout mask]
    logits = h_L @ W_out + b_out [+ x @ W_direct]       Bengio's direct connections
    loss   = mean_i -log softmax(logits_i)[y_i]         F.cross_entropy

Its gradients are derived by hand in Karpathy's "makemore part 4: becoming a backprop ninja";
`_forward_backward` below is that derivation written out once more, layer by layer:

    dlogits  = (softmax(logits) - onehot(y)) / B        cross-entropy and softmax together
    dW_out   = h_L^T @ dlogits      db_out = sum_i dlogits_i
    dh_L     = dlogits @ W_out^T
    dhpre_l  = dh_l * mask_l * (1 - h_l^2)              d tanh(u)/du = 1 - tanh(u)^2
    dW_l     = h_{l-1}^T @ dhpre_l  db_l = sum_i dhpre_l,i
    dh_{l-1} = dhpre_l @ W_l^T      (dh_0 = dx)
    dW_direct = x^T @ dlogits       dx += dlogits @ W_direct^T
    dC[c]    = sum of the rows of demb = dx.view(B, T, E) whose input character is c

Why a second engine? At the lecture's size (batch 32, 200 hidden units) a step is ~2 MFLOP,
some 20 microseconds of arithmetic; PyTorch's eager autograd spends several times that on
bookkeeping (recording the graph, allocating every intermediate, dispatching ~60 small
kernels). Here a step is ~35 NumPy calls on preallocated buffers, with no graph and no
allocation:

* the parameters stay the model's own torch tensors; we work on NumPy views of them
  (`p.detach().numpy()` shares memory on the CPU), so after each step the model holds the
  updated weights and checkpoints, evaluation and sampling simply use the model;
* every intermediate (emb, hpre, h, logits, dlogits, dh, ...) lives in a buffer allocated
  once per batch size and is written with `out=`;
* a bias is a weight on an input that is always 1: each layer's input buffer carries a
  column of ones, so [dW; db] = [h_in, 1]^T @ dhpre is one matrix product (the gradients
  live in one flat buffer in which each W is followed by its b);
* the embedding gradient is a 1-D `np.add.at` over precomputed flat indices (ufunc.at's fast
  path) rather than the slow 2-D one;
* SGD folds its learning rate into dlogits (the backward pass is linear in dlogits, so every
  gradient comes out already multiplied by lr) and updates each tensor with one
  subtraction; AdamW keeps gradients and moments in flat buffers and updates the whole model
  with ten array operations;
* one pool of BLAS threads: small matrix products (the lecture's) go to NumPy's OpenBLAS,
  which runs them on the calling thread, large ones to torch.mm, whose OpenMP threads the
  rest of the training loop uses too (see OPENBLAS_ONE_THREAD).

The math is checked against torch autograd in tests/test_fused.py, in float64, through
`loss_and_grads`, which runs the very same `_forward_backward` as the engine.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .model import MLP, decays, param_shapes

OPTIMIZERS = ("sgd", "adamw")
ADAM_EPS = 1e-8  # torch.optim.AdamW's default, as train.AutogradEngine uses it
MASK_BITS = 16  # dropout draws 16 random bits per unit (see FusedEngine._draw_masks)
# Which BLAS multiplies the matrices. NumPy's OpenBLAS and torch's MKL each keep a pool of
# worker threads that spin for a while after each call; in a training loop that also calls
# torch (minibatch indexing, evaluation) the two pools fight over the cores: with OpenBLAS, a
# step of the `default` preset took ~9 ms in the loop against 2 ms alone. OpenBLAS runs a
# product on the calling thread alone up to 4 * 65536 multiply-adds (its
# GEMM_MULTITHREAD_THRESHOLD; matrix-vector products: 4 * 2304 entries), so workspaces whose
# largest product fits use NumPy (less overhead per call: the lecture's sizes), and larger ones
# use torch.mm, whose threads the loop shares.
OPENBLAS_ONE_THREAD = 4 * 65536
OPENBLAS_ONE_THREAD_GEMV = 4 * 2304


def small_products(cfg: ModelConfig, B: int) -> bool:
    """Whether every matrix product of a step at batch size B is small enough for OpenBLAS to
    run on the calling thread (see OPENBLAS_ONE_THREAD); larger ones go to torch.mm's threads."""
    T, E, H, V, L = cfg.block_size, cfg.emb_dim, cfg.hidden, cfg.vocab_size, cfg.layers
    products = [B * (T * E + 1) * H, B * (H + 1) * H * (L > 1), B * (H + 1) * V, B * T * E * V]
    return max(products) <= OPENBLAS_ONE_THREAD and B * V <= OPENBLAS_ONE_THREAD_GEMV


def unsupported_reason(model_cfg: ModelConfig, train_cfg: TrainConfig) -> str | None:
    """None if FusedEngine supports these options, else a short reason (e.g. 'device cuda')."""
    device = train_cfg.device
    if device == "auto":  # decided as train.resolve_device decides it
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        return f"device {device}"
    if train_cfg.optimizer not in OPTIMIZERS:
        return f"optimizer {train_cfg.optimizer}"
    return None


# --------------------------------------------------------------------------------------------
# The math: forward, loss and hand-written backward, on preallocated buffers
# --------------------------------------------------------------------------------------------

def _torch_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b by torch (MKL, on torch's OpenMP threads), in place in NumPy's arrays."""
    torch.mm(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))


def _flat_buffer(cfg: ModelConfig, dtype, members: int | None = None,
                 align: int = 1) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One zeroed flat array holding a tensor per parameter, in `param_shapes` order (so each
    W_l is followed by its b_l, and W_out by b_out), and the name -> view mapping.

    With `members` (population.py), one such row per member: a (members, width) array whose
    views have a leading member axis, each row padded to a multiple of `align` entries."""
    shapes = param_shapes(cfg)
    lead = () if members is None else (members,)
    size = sum(math.prod(s) for s in shapes.values())
    flat = np.zeros(lead + (-(-size // align) * align,), dtype)
    views, offset = {}, 0
    for name, shape in shapes.items():
        views[name] = flat[..., offset:offset + math.prod(shape)].reshape(lead + shape)
        offset += math.prod(shape)
    return flat, views


def _stacked(flat: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[W; b] as one (..., fan_in + 1, fan_out) array: the view of `flat` from W through b."""
    fan_in, fan_out = W.shape[-2:]
    if b.ctypes.data != W.ctypes.data + fan_in * fan_out * W.itemsize:
        raise AssertionError("a bias must follow its weight matrix in the flat buffer")
    start = (W.ctypes.data - flat.ctypes.data) // flat.itemsize
    return flat[..., start:start + (fan_in + 1) * fan_out].reshape(flat.shape[:-1] + (fan_in + 1, fan_out))


def _t(a: np.ndarray) -> np.ndarray:
    """The transpose of a matrix, or of each matrix of a stack (a view, made once per buffer)."""
    return a.swapaxes(-1, -2)


class _Params:
    """Parameter (or gradient) arrays, grouped as the forward pass uses them.

    Arrays may carry a leading member axis (population.py: K models at once); biases get a
    unit axis before their last so that they broadcast over the batch either way."""

    def __init__(self, arrays: Mapping[str, np.ndarray], cfg: ModelConfig, flat: np.ndarray | None = None):
        self.C = arrays["C"]
        self.layers = [(arrays[f"W{i}"], arrays[f"b{i}"][..., None, :]) for i in range(1, cfg.layers + 1)]
        self.layers_T = [_t(W) for W, _ in self.layers]
        self.W_out = arrays["W_out"]
        self.W_out_T = _t(self.W_out)
        self.b_out = arrays["b_out"][..., None, :]
        self.W_direct = arrays["W_direct"] if cfg.direct else None
        self.W_direct_T = _t(self.W_direct) if cfg.direct else None
        if flat is not None:  # gradients: [dW; db] views for the stacked products
            self.Wb = [_stacked(flat, W, b) for W, b in self.layers]
            self.Wb_out = _stacked(flat, self.W_out, self.b_out)
            self.C_flat = flat.reshape(-1)  # C comes first in the buffer: dC's flat indices are flat's


def _column_major(shape: tuple[int, ...], dtype, fill: float | None = None) -> np.ndarray:
    """An array of `shape` whose last two axes are column-major (order="F" for a matrix)."""
    swapped = shape[:-2] + (shape[-1], shape[-2])
    a = np.empty(swapped, dtype) if fill is None else np.full(swapped, fill, dtype)
    return _t(a)


class _Workspace:
    """Every intermediate of one step, for one batch size B, allocated once.

    Layer inputs have one more column than the layer's fan_in, always 1 (for the bias).
    With `members` (population.py), every buffer gets a leading member axis, and C's rows
    are those of all the members' tables, `table_rows` in all (see PopulationEngine)."""

    def __init__(self, cfg: ModelConfig, B: int, dtype, dropout: bool, members: int | None = None,
                 table_rows: int | None = None):
        T, E, H, V, L = cfg.block_size, cfg.emb_dim, cfg.hidden, cfg.vocab_size, cfg.layers
        lead = () if members is None else (members,)
        self.B = B
        self.matmul = np.matmul if small_products(cfg, B) else _torch_matmul
        self.x1 = np.ones(lead + (B, T * E + 1), dtype)  # [x, 1]
        self.x = self.x1[..., :-1]  # the concatenated embeddings, (B, T*E)
        self.emb = self.x.reshape(lead + (B, T, E))  # a view: take() writes C[idx] straight into x
        # Hidden-layer buffers are column-major (order="F"), so that the first H columns of
        # [h, 1] are one contiguous block: elementwise passes over h then run at full speed.
        # (Only the memory layout differs; BLAS takes either layout at no cost.)
        self.h1 = [_column_major(lead + (B, H + 1), dtype, 1.0) for _ in range(L)]  # [layer output, 1]
        self.inputs1 = [self.x1] + self.h1[:-1]  # each layer's [input, 1]
        self.hpre = [_column_major(lead + (B, H), dtype) for _ in range(L)]  # later dhpre
        # tanh outputs: straight into h1 without dropout; with it, h1 holds h * mask
        self.h = [_column_major(lead + (B, H), dtype) if dropout else h1[..., :-1] for h1 in self.h1]
        self.dh = [_column_major(lead + (B, H), dtype) for _ in range(L)]
        self.one_minus_h2 = _column_major(lead + (B, H), dtype)
        # transposed views for the backward products, made once
        self.x_T, self.h1_T, self.inputs1_T = _t(self.x), [_t(a) for a in self.h1], [_t(a) for a in self.inputs1]
        self.logits = np.empty(lead + (B, V), dtype)
        self.logits_flat = self.logits.reshape(-1)
        self.logits_direct = np.empty(lead + (B, V), dtype)  # x @ W_direct
        self.dlogits = np.empty(lead + (B, V), dtype)  # first exp(logits), the counts
        self.dlogits_flat = self.dlogits.reshape(-1)
        self.counts_sum = np.empty(lead + (B,), dtype)
        self.counts_sum_col = self.counts_sum[..., None]
        self.target_logit = np.empty(lead + (B,), dtype)  # logits[i, y_i]
        self.nll = np.empty(lead + (B,), dtype)  # -log p(y_i), each example's loss
        self.ones_v = np.ones((V, 1), dtype)  # sums over the vocabulary as a matrix product
        # flat index of logits[i, 0]
        self.row_start = np.arange(math.prod(lead) * B, dtype=np.intp).reshape(lead + (B,)) * V
        self.target = np.empty(lead + (B,), np.intp)  # flat index of logits[i, y_i]
        self.dx = np.empty(lead + (B, T * E), dtype)
        self.dx_direct = np.empty(lead + (B, T * E), dtype)
        self.demb = self.dx.reshape(-1)  # one entry per (example, position, embedding dim)
        # key_table[c, j] = c*E + j is the flat index of C[c, j], so keys = key_table[idx] says
        # where each entry of demb lands in dC (in a population, of row c of all members' C).
        self.key_table = np.arange((table_rows or V) * E, dtype=np.intp).reshape(-1, E)
        self.keys = np.empty(lead + (B, T, E), np.intp)
        self.keys_flat = self.keys.reshape(-1)


def _forward_backward(p: _Params, g: _Params, ws: _Workspace, idx: np.ndarray, y: np.ndarray,
                      masks: Sequence[np.ndarray | None], grad_scale: float) -> float:
    """The minibatch (idx, y)'s loss; writes grad_scale * d(loss)/d(param) into g's arrays.

    masks[l] is hidden layer l's dropout mask, already divided by the keep probability
    (inverted dropout), or None. Each line's comment gives its math; B is the batch size.
    Callers run it under np.errstate(all="ignore"): an overflowing exp is handled below, and
    a diverging run shows as an inf or nan loss, which the training loop checks.

    The same code steps a population of K models (population.py): every array then has a
    leading member axis, idx indexes the rows of all members' C tables, grad_scale is a
    (K, 1) array, and the returned loss is the members' summed (their own are in ws.nll).
    """
    B, matmul = ws.B, ws.matmul  # matmul(a, b, out): out = a @ b
    # ---------------- forward ----------------
    # (array.take(...) is np.take without its Python wrapper, which costs more than the copy)
    p.C.take(idx, axis=0, out=ws.emb)  # emb = C[idx]: each character's row of C
    h_in = ws.x  # (B, T*E): the T embeddings side by side
    for (W, b), hpre, h, h1, mask in zip(p.layers, ws.hpre, ws.h, ws.h1, masks):
        matmul(h_in, W, hpre)
        hpre += b  # hpre = h_in @ W + b
        np.tanh(hpre, out=h)  # h = tanh(hpre)
        h_in = h1[..., :-1]
        if mask is not None:
            np.multiply(h, mask, out=h_in)  # inverted dropout: zero some units, scale the rest
    logits = ws.logits
    matmul(h_in, p.W_out, logits)
    logits += p.b_out  # logits = h @ W_out + b_out
    if p.W_direct is not None:
        matmul(ws.x, p.W_direct, ws.logits_direct)
        logits += ws.logits_direct  # Bengio's direct connections: + x @ W_direct

    # ---------------- loss ----------------
    # cross-entropy = mean_i [log sum_j exp(logits_ij) - logits_i,y_i]. makemore part 4 first
    # subtracts each row's max (logit_maxes) so that exp cannot overflow; softmax does not change
    # when a row is shifted. We shift each row by its *target's* logit instead, which we need
    # anyway: then exp(shifted)[i, y_i] = 1, so counts_sum_i >= 1 (no underflow, and its log is
    # directly the example's loss), and exp overflows only where a wrong class's logit beats the
    # target's by more than ~88 (float32): the loss comes out inf and `_loss_max_shifted` redoes
    # this part with the max.
    counts, counts_sum, target = ws.dlogits, ws.counts_sum, ws.target
    np.add(ws.row_start, y, out=target)  # flat index of logits[i, y_i]
    ws.logits_flat.take(target, out=ws.target_logit)  # logits[i, y_i]
    logits -= ws.target_logit[..., None]  # logits_ij - logits_i,y_i
    np.exp(logits, out=counts)  # counts = exp(shifted logits), 1 at the targets
    matmul(counts, ws.ones_v, ws.counts_sum_col)  # counts_sum = counts summed over the row
    np.log(counts_sum, out=ws.nll)  # -log p(y_i) = -log(counts[i, y_i] / counts_sum_i)
    loss = float(np.add.reduce(ws.nll, axis=None)) / B  # the mean negative log-likelihood (summed over members)
    if not math.isfinite(loss):
        loss = _loss_max_shifted(ws)  # the same, with counts = exp(logits - logit_maxes)

    # ---------------- backward ----------------
    # d loss / d logits = (softmax(logits) - onehot(y)) / B  (makemore part 4's cross-entropy
    # backward "in one go"). Scaled by c = grad_scale / B, every gradient below is scaled too.
    c = grad_scale / B
    dlogits = counts
    np.divide(c, counts_sum, out=counts_sum)  # c / counts_sum
    dlogits *= ws.counts_sum_col  # c * softmax = c * counts / counts_sum
    ws.dlogits_flat[target] -= c  # - c * onehot(y)
    # output layer, logits = [h, 1] @ [W_out; b_out]
    matmul(ws.h1_T[-1], dlogits, g.Wb_out)  # [dW_out; db_out] = [h, 1]^T @ dlogits
    if p.W_direct is not None:
        matmul(ws.x_T, dlogits, g.W_direct)  # dW_direct = x^T @ dlogits
    dh = ws.dh[-1]
    matmul(dlogits, p.W_out_T, dh)  # dh = dlogits @ W_out^T
    for l in range(len(p.layers) - 1, -1, -1):
        h, mask, one_minus_h2, dhpre = ws.h[l], masks[l], ws.one_minus_h2, ws.hpre[l]
        if mask is not None:
            dh *= mask  # through dropout: the same mask and scale
        np.multiply(h, h, out=one_minus_h2)
        np.subtract(1.0, one_minus_h2, out=one_minus_h2)  # tanh'(hpre) = 1 - h^2
        np.multiply(dh, one_minus_h2, out=dhpre)  # dhpre = dh * (1 - h^2), in hpre's buffer
        matmul(ws.inputs1_T[l], dhpre, g.Wb[l])  # [dW; db] = [h_in, 1]^T @ dhpre
        dh = ws.dh[l - 1] if l > 0 else ws.dx
        matmul(dhpre, p.layers_T[l], dh)  # dh_in = dhpre @ W^T (dx for the first layer)
    if p.W_direct is not None:
        matmul(dlogits, p.W_direct_T, ws.dx_direct)
        ws.dx += ws.dx_direct  # dx += dlogits @ W_direct^T: x feeds two places, grads add up
    # embedding: emb = C[idx] copies rows of C, so dC[c] sums the rows of demb whose character
    # is c (makemore part 4's loop over the batch; np.add.at adds repeated indices up).
    ws.key_table.take(idx, axis=0, out=ws.keys)  # keys[i, t, j] = idx[i, t]*E + j
    g.C.fill(0.0)
    np.add.at(g.C_flat, ws.keys_flat, ws.demb)  # dC.flat[keys] += demb
    return loss


def _loss_max_shifted(ws: _Workspace) -> float:
    """The loss part of `_forward_backward` for rows where a logit beats the target's by more
    than exp can take: shift each row by its max instead (makemore part 4's logit_maxes), so
    that exp(logits - max) <= 1 cannot overflow."""
    logits, counts, counts_sum, matmul = ws.logits, ws.dlogits, ws.counts_sum, ws.matmul
    logit_maxes = ws.target_logit  # of the logits as shifted so far
    np.maximum.reduce(logits, axis=-1, out=logit_maxes)
    logits -= logit_maxes[..., None]  # norm_logits = logits - logit_maxes
    np.exp(logits, out=counts)
    matmul(counts, ws.ones_v, ws.counts_sum_col)
    np.log(counts_sum, out=ws.nll)
    ws.nll += logit_maxes  # -log p(y_i) = log counts_sum_i - norm_logits[i, y_i], which is -max_i
    return float(np.add.reduce(ws.nll, axis=None)) / ws.B


def loss_and_grads(params: Mapping[str, np.ndarray | torch.Tensor], xb, yb, cfg: ModelConfig,
                   dropout_mask=None) -> tuple[float, dict[str, np.ndarray]]:
    """The fused engine's forward and backward pass as a pure function, in float64.

    params: name -> array (the names and shapes of `model.param_shapes(cfg)`); xb: (B,
    block_size) character indices; yb: (B,) targets. dropout_mask: None for no dropout, or one
    (B, hidden) array per hidden layer (a bare array for a single layer), 1 where a unit is
    kept and 0 where it is dropped; kept units are scaled by 1/(1 - cfg.dropout) as F.dropout
    scales them. Returns (mean cross-entropy, name -> d loss / d param).
    """
    arrays = {n: np.array(params[n].detach().cpu().numpy() if isinstance(params[n], torch.Tensor) else params[n],
                          dtype=np.float64) for n in param_shapes(cfg)}
    for n, shape in param_shapes(cfg).items():
        if arrays[n].shape != shape:
            raise ValueError(f"parameter {n} has shape {arrays[n].shape}, the config says {shape}")
    flat, grads = _flat_buffer(cfg, np.float64)
    idx = np.asarray(xb, dtype=np.intp)
    y = np.asarray(yb, dtype=np.intp)
    masks: list[np.ndarray | None] = [None] * cfg.layers
    if dropout_mask is not None:
        if np.ndim(dropout_mask) == 2:
            dropout_mask = [dropout_mask]
        if len(dropout_mask) != cfg.layers:
            raise ValueError(f"need one dropout mask per hidden layer ({cfg.layers}), got {len(dropout_mask)}")
        masks = [np.asarray(m, dtype=np.float64) / (1.0 - cfg.dropout) for m in dropout_mask]
    ws = _Workspace(cfg, idx.shape[0], np.float64, dropout=dropout_mask is not None)
    with np.errstate(all="ignore"):
        loss = _forward_backward(_Params(arrays, cfg), _Params(grads, cfg, flat), ws, idx, y, masks, 1.0)
    return loss, grads


# --------------------------------------------------------------------------------------------
# The engine: the step above and the optimizer update, in place on the model's tensors
# --------------------------------------------------------------------------------------------

class FusedEngine:
    """Forward, hand-written backward and SGD/AdamW update, on the model's own tensors.

    The interface and the math of train.AutogradEngine (torch.optim.SGD without momentum, or
    torch.optim.AdamW; weight decay on C and the W's, never on biases), with two differences:
    dropout masks come from a NumPy generator seeded with `train_cfg.seed` (they cannot equal
    torch's), and results agree with autograd to float rounding, not bit for bit.

    The model's parameters must keep their storage while the engine lives (in-place changes
    such as `copy_` or `load_state_dict` are fine; assigning `p.data` is not).
    """

    name = "fused"

    def __init__(self, model: MLP, train_cfg: TrainConfig):
        reason = unsupported_reason(model.cfg, train_cfg)
        if reason is not None:
            raise ValueError(f"FusedEngine does not support this run: {reason}")
        cfg = model.cfg
        self.model, self.cfg = model, cfg
        self.names = list(param_shapes(cfg))
        tensors = dict(model.named_parameters())
        if sorted(tensors) != sorted(self.names):
            raise ValueError(f"model parameters {sorted(tensors)} do not match its config {self.names}")
        dtypes = {t.dtype for t in tensors.values()}
        for name, t in tensors.items():
            if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64) or not t.is_contiguous():
                raise ValueError(f"FusedEngine needs contiguous float32/float64 CPU tensors; {name} is "
                                 f"{t.dtype} on {t.device}")
        if len(dtypes) != 1:
            raise ValueError(f"FusedEngine needs one dtype for all parameters, got {dtypes}")
        # NumPy views sharing memory with the model's tensors: updating them updates the model
        self.arrays = {n: tensors[n].detach().numpy() for n in self.names}
        self.dtype = self.arrays["C"].dtype
        self.params = _Params(self.arrays, cfg)
        self.grad_flat, self.grad_arrays = _flat_buffer(cfg, self.dtype)
        self.grads = _Params(self.grad_arrays, cfg, self.grad_flat)
        self.optimizer = train_cfg.optimizer
        self.weight_decay = float(train_cfg.weight_decay)
        self.decayed = [self.arrays[n] for n in self.names if decays(n)]
        self.pairs = [(self.arrays[n], self.grad_arrays[n]) for n in self.names]
        if self.optimizer == "adamw":
            self.beta1, self.beta2 = (float(b) for b in train_cfg.betas)
            self.m_flat, self.m = _flat_buffer(cfg, self.dtype)  # first moment (torch: exp_avg)
            self.v_flat, self.v = _flat_buffer(cfg, self.dtype)  # second moment (exp_avg_sq)
            self.step_flat, self.step_arrays = _flat_buffer(cfg, self.dtype)
            self.updates = [(self.arrays[n], self.step_arrays[n]) for n in self.names]
            self.t = 0  # AdamW's step counter
        self.dropout = float(cfg.dropout)
        self.drop_below, self.keep_scale = dropout_threshold(self.dropout)
        self.rng = np.random.default_rng(train_cfg.seed)
        self._workspaces: dict[int, _Workspace] = {}

    def _workspace(self, B: int) -> _Workspace:
        ws = self._workspaces.get(B)
        if ws is None:
            ws = self._workspaces[B] = _Workspace(self.cfg, B, self.dtype, dropout=self.dropout > 0)
            shape = (B, self.cfg.hidden)
            if self.dropout > 0:  # column-major like the layers' buffers
                ws.keep = np.empty(shape, np.bool_, order="F")
                ws.masks = [np.empty(shape, self.dtype, order="F") for _ in range(self.cfg.layers)]
            else:
                ws.masks = [None] * self.cfg.layers
        return ws

    def _draw_masks(self, ws: _Workspace) -> None:
        draw_masks(self.rng, self.drop_below, self.keep_scale, ws.keep, ws.masks)

    def step(self, xb: torch.LongTensor, yb: torch.LongTensor, lr: float) -> float:
        """One minibatch update; returns the minibatch loss computed before the update."""
        idx, y = xb.numpy(), yb.numpy()
        ws = self._workspace(idx.shape[0])
        if self.dropout > 0:
            self._draw_masks(ws)
        with np.errstate(all="ignore"):  # see _forward_backward
            if self.optimizer == "sgd":
                # p <- p - lr * (g + wd * p) = p * (1 - lr*wd) - lr*g, with lr*g straight out of
                # the backward pass (grad_scale=lr): one subtraction per tensor.
                loss = _forward_backward(self.params, self.grads, ws, idx, y, ws.masks, lr)
                if self.weight_decay:
                    shrink = 1.0 - lr * self.weight_decay
                    for p in self.decayed:
                        p *= shrink
                for p, lr_times_g in self.pairs:
                    p -= lr_times_g
            else:
                loss = _forward_backward(self.params, self.grads, ws, idx, y, ws.masks, 1.0)
                self._adamw(lr)
        return loss

    def _adamw(self, lr: float) -> None:
        """torch.optim.AdamW's update (Kingma & Ba's Adam, Loshchilov & Hutter's decoupled
        weight decay), for every parameter at once on the flat buffers:

            p <- p * (1 - lr*wd)                       (decayed parameters only)
            p <- p - adamw_step(...)                   (see there)
        """
        self.t += 1
        if self.weight_decay:
            shrink = 1.0 - lr * self.weight_decay
            for p in self.decayed:
                p *= shrink
        adamw_step(self.grad_flat, self.m_flat, self.v_flat, self.step_flat, self.beta1, self.beta2, self.t, lr)
        for p, p_step in self.updates:
            p -= p_step

    # ---- checkpoints ----

    def state_dict(self) -> dict[str, torch.Tensor]:
        """AdamW's state under the names train.AutogradEngine uses for torch.optim.AdamW's
        ('optim.exp_avg.W1', 'optim.exp_avg_sq.W1', 'optim.step.W1', ...), so that a run can
        resume with either engine; with dropout, also the mask generator ('fused.dropout_rng').
        Copies, safe to keep. Plain SGD has no state."""
        adamw = (self.m, self.v, self.t) if self.optimizer == "adamw" else None
        return optimizer_state(self.names, adamw, self.rng if self.dropout > 0 else None)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore `state_dict()` (AutogradEngine's AdamW state too: it has the same names)."""
        if self.optimizer == "adamw":
            for n in self.names:
                for moment, key in ((self.m, f"optim.exp_avg.{n}"), (self.v, f"optim.exp_avg_sq.{n}")):
                    if key in state:
                        value = state[key]
                        if tuple(value.shape) != moment[n].shape:
                            raise ValueError(f"{key} has shape {tuple(value.shape)}, expected {moment[n].shape}")
                        moment[n][...] = value.detach().cpu().numpy()
            key = f"optim.step.{self.names[0]}"
            if key in state:
                self.t = int(state[key])
        if "fused.dropout_rng" in state:
            _rng_from_tensor(self.rng, state["fused.dropout_rng"])


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


def adamw_step(g: np.ndarray, m: np.ndarray, v: np.ndarray, step: np.ndarray, beta1, beta2, t: int, lr) -> None:
    """Adam's moments and step (Kingma & Ba 2015, algorithm 1), as torch.optim.AdamW computes
    them; updates m and v in place and leaves in `step` what to subtract from the parameters:

        m <- m + (1 - beta1) * (g - m)             (torch: exp_avg.lerp_(g, 1 - beta1))
        v <- beta2 * v + (1 - beta2) * g^2
        step = lr/(1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    The last line is computed as Kingma & Ba (end of section 2) suggest, one pass shorter:
    with s = sqrt(1 - beta2^t), step = (lr*s/(1 - beta1^t)) * m/(sqrt(v) + eps*s).
    beta1, beta2 and lr are numbers, or (K, 1) arrays of one per member of a population
    (population.py), whose rows g, m, v and step are then.
    """
    def c(x):  # a coefficient in the buffers' precision (NumPy casts a Python float so itself)
        return x if isinstance(x, float) else x.astype(step.dtype)

    np.subtract(g, m, out=step)
    step *= c(1.0 - beta1)
    m += step  # m = lerp(m, g, 1 - beta1)
    v *= c(beta2)
    np.multiply(g, g, out=step)
    step *= c(1.0 - beta2)
    v += step  # v = beta2 v + (1 - beta2) g^2
    s = (1.0 - beta2 ** t) ** 0.5
    np.sqrt(v, out=step)
    step += c(ADAM_EPS * s)
    np.divide(m, step, out=step)
    step *= c(lr * s / (1.0 - beta1 ** t))  # = lr * m_hat / (sqrt(v_hat) + eps)


def optimizer_state(names: Sequence[str], adamw: tuple[Mapping, Mapping, int] | None,
                    dropout_rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
    """A checkpoint's optimizer entries under train.AutogradEngine's names (see state_dict):
    adamw = (first moments, second moments, step count) by parameter name, or None."""
    state: dict[str, torch.Tensor] = {}
    if adamw is not None:
        m, v, t = adamw
        for n in names:
            state[f"optim.exp_avg.{n}"] = torch.from_numpy(np.array(m[n]))
            state[f"optim.exp_avg_sq.{n}"] = torch.from_numpy(np.array(v[n]))
            state[f"optim.step.{n}"] = torch.tensor(float(t))  # torch keeps a float tensor
    if dropout_rng is not None:
        state["fused.dropout_rng"] = _rng_to_tensor(dropout_rng)
    return state


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
