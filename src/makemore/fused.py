"""The fused engine: one training step of the MLP with a hand-written backward pass.

The model is the neural probabilistic language model of Bengio, Ducharme, Vincent & Jauvin,
"A Neural Probabilistic Language Model" (JMLR 2003), exactly as `model.MLP` computes it:

    emb    = C[idx]                         (B, T, E)   embedding lookup, T = block_size (+ 1: a labelled list's label, models/mlp.py)
    x      = emb.view(B, T*E)                           concatenation
    hpre_l = h_{l-1} @ W_l + b_l            (h_0 = x)   for each hidden layer l = 1..L
    h_l    = tanh(hpre_l) [* dropout mask]
    logits = h_L @ W_out + b_out [+ x @ W_direct]       Bengio's direct connections
    loss   = mean_i -log softmax(logits_i)[y_i]         F.cross_entropy

Its gradients are derived by hand in Karpathy's "makemore part 4: becoming a backprop ninja";
`forward_backward` below is that derivation written out once more, layer by layer:

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

* the parameters live in one flat NumPy buffer and the model's tensors are views of it
  (torch.from_numpy shares memory on the CPU), so after each step the model holds the
  updated weights and checkpoints, evaluation and sampling simply use the model;
* every intermediate (emb, hpre, h, logits, dlogits, dh, ...) lives in a buffer allocated
  once per batch size and is written with `out=`;
* a bias is a weight on an input that is always 1: each layer's input buffer carries a
  column of ones, so [dW; db] = [h_in, 1]^T @ dhpre is one matrix product (the gradients
  live in one flat buffer in which each W is followed by its b);
* the embedding gradient is a 1-D `np.add.at` over precomputed flat indices (ufunc.at's fast
  path) rather than the slow 2-D one;
* the update is the optimizer's `Flat` form (optimizers/): SGD folds its learning rate into
  dlogits (the backward pass is linear in dlogits, so every gradient comes out already
  multiplied by lr) and updates the whole model with one subtraction; AdamW keeps its moments
  in flat buffers and updates the whole model with ten array operations;
* one pool of BLAS threads: small matrix products (the lecture's) go to NumPy's OpenBLAS,
  which runs them on the calling thread, large ones to torch.mm, whose OpenMP threads the
  rest of the training loop uses too (see OPENBLAS_ONE_THREAD);
* with TrainConfig.precision bfloat16, every product of the step (the layers', the logits',
  the backward pass's) rounds its inputs to bfloat16 and multiplies them in torch, as
  torch.autocast does for the autograd engine; the buffers, the elementwise math, the loss and
  the update stay float32. NumPy has no bfloat16, so each product pays two casts and a
  widening copy: it pays for itself where the products are large (docs/precision.md).

The math is checked against torch autograd in tests/test_fused.py, in float64, through
`loss_and_grads`, which runs the very same `forward_backward` as the engine. The engine that
steps with it, keeping the parameters and the optimizer's state, is fused_engine.py.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from . import optimizers
from .config import TrainConfig
from .devices import resolve_device
from .models.mlp import MLPConfig, param_shapes

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


def small_products(cfg: MLPConfig, B: int) -> bool:
    """Whether every matrix product of a step at batch size B is small enough for OpenBLAS to
    run on the calling thread (see OPENBLAS_ONE_THREAD); larger ones go to torch.mm's threads."""
    T, E, H, V, L = cfg.inputs, cfg.emb_dim, cfg.hidden, cfg.vocab_size, cfg.layers
    products = [B * (T * E + 1) * H, B * (H + 1) * H * (L > 1), B * (H + 1) * V, B * T * E * V]
    return max(products) <= OPENBLAS_ONE_THREAD and B * V <= OPENBLAS_ONE_THREAD_GEMV


def unsupported_reason(model_cfg: MLPConfig, train_cfg: TrainConfig, device: str | None = None) -> str | None:
    """None if the fused engine supports these options on `device` (default: the one
    devices.resolve_device makes of train_cfg.device), else a short reason (e.g. 'device cuda')."""
    if model_cfg.name != "mlp":
        return f"it computes the MLP only, not --model {model_cfg.name}"
    if device is None:
        device = resolve_device(train_cfg.device)[0] if train_cfg.device != "cuda" else "cuda"
    if device != "cpu":
        return f"device {device}"
    if not hasattr(optimizers.get(train_cfg.optimizer), "Flat"):
        return f"optimizer {train_cfg.optimizer} has no fused update"
    if model_cfg.hash_orders:
        return "it has no hashed context features (--hash-orders 0)"
    if model_cfg.adaptive:  # its hand-written backward pass is the full softmax's
        return "it computes the full softmax only, not the adaptive one (--softmax full)"
    return None


# --------------------------------------------------------------------------------------------
# The math: forward, loss and hand-written backward, on preallocated buffers
# --------------------------------------------------------------------------------------------

def _torch_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b by torch (MKL, on torch's OpenMP threads), in place in NumPy's arrays."""
    torch.mm(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))


def _bfloat16_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b with a and b rounded to bfloat16 (TrainConfig.precision): torch's bfloat16
    product (float32 accumulation inside; a batched one for (K, n, m) stacks), its bfloat16
    result widened into `out`."""
    product = torch.matmul(torch.from_numpy(a).to(torch.bfloat16), torch.from_numpy(b).to(torch.bfloat16))
    torch.from_numpy(out).copy_(product)


def flat_buffer(cfg: MLPConfig, dtype, members: int | None = None,
                 align: int = 1) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One zeroed flat array holding a tensor per parameter, in `param_shapes` order (so each
    W_l is followed by its b_l, and W_out by b_out), and the name -> view mapping.

    With `members` (K models: FusedEngine's population), one such row per member: a (members, width) array whose
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


def views(cfg: MLPConfig, buffer: np.ndarray) -> dict[str, np.ndarray]:
    """name -> (K, *shape) view of a (K, P) buffer laid out as flat_buffer lays it out."""
    views, offset = {}, 0
    for name, shape in param_shapes(cfg).items():
        views[name] = buffer[:, offset:offset + math.prod(shape)].reshape((buffer.shape[0],) + shape)
        offset += math.prod(shape)
    return views


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


class Params:
    """Parameter (or gradient) arrays, grouped as the forward pass uses them.

    Arrays may carry a leading member axis (K models at once, see FusedEngine); biases get a
    unit axis before their last so that they broadcast over the batch either way."""

    def __init__(self, arrays: Mapping[str, np.ndarray], cfg: MLPConfig, flat: np.ndarray | None = None):
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


def column_major(shape: tuple[int, ...], dtype, fill: float | None = None) -> np.ndarray:
    """An array of `shape` whose last two axes are column-major (order="F" for a matrix)."""
    swapped = shape[:-2] + (shape[-1], shape[-2])
    a = np.empty(swapped, dtype) if fill is None else np.full(swapped, fill, dtype)
    return _t(a)


class Workspace:
    """Every intermediate of one step, for one batch size B, allocated once.

    Layer inputs have one more column than the layer's fan_in, always 1 (for the bias).
    With `members` (K models, see FusedEngine), every buffer gets a leading member axis, and C's rows
    are those of all the members' tables, `table_rows` in all (see PopulationEngine)."""

    def __init__(self, cfg: MLPConfig, B: int, dtype, dropout: bool, members: int | None = None,
                 table_rows: int | None = None, precision: str = "float32"):
        T, E, H, V, L = cfg.inputs, cfg.emb_dim, cfg.hidden, cfg.vocab_size, cfg.layers
        lead = () if members is None else (members,)
        self.B = B
        # matmul: the products of a layer and of the backward pass, in `precision`; sum_matmul:
        # the softmax's row sums, which stay in float32 (the loss is float32 whatever the precision)
        self.sum_matmul = np.matmul if small_products(cfg, B) or members else _torch_matmul
        self.matmul = _bfloat16_matmul if precision == "bfloat16" else self.sum_matmul
        self.x1 = np.ones(lead + (B, T * E + 1), dtype)  # [x, 1]
        self.x = self.x1[..., :-1]  # the concatenated embeddings, (B, T*E)
        self.emb = self.x.reshape(lead + (B, T, E))  # a view: take() writes C[idx] straight into x
        # Hidden-layer buffers are column-major (order="F"), so that the first H columns of
        # [h, 1] are one contiguous block: elementwise passes over h then run at full speed.
        # (Only the memory layout differs; BLAS takes either layout at no cost.)
        self.h1 = [column_major(lead + (B, H + 1), dtype, 1.0) for _ in range(L)]  # [layer output, 1]
        self.inputs1 = [self.x1] + self.h1[:-1]  # each layer's [input, 1]
        self.hpre = [column_major(lead + (B, H), dtype) for _ in range(L)]  # later dhpre
        # tanh outputs: straight into h1 without dropout; with it, h1 holds h * mask
        self.h = [column_major(lead + (B, H), dtype) if dropout else h1[..., :-1] for h1 in self.h1]
        self.dh = [column_major(lead + (B, H), dtype) for _ in range(L)]
        self.one_minus_h2 = column_major(lead + (B, H), dtype)
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
        self.key_table = np.arange((table_rows or cfg.table_rows) * E, dtype=np.intp).reshape(-1, E)
        self.keys = np.empty(lead + (B, T, E), np.intp)
        self.keys_flat = self.keys.reshape(-1)


def forward_backward(p: Params, g: Params, ws: Workspace, idx: np.ndarray, y: np.ndarray,
                      masks: Sequence[np.ndarray | None], grad_scale: float,
                      teacher: np.ndarray | None = None, teacher_weight: float = 0.0) -> float:
    """The minibatch (idx, y)'s loss; writes grad_scale * d(loss)/d(param) into g's arrays.

    With `teacher` ((B, V) distributions, see TrainConfig.teacher) the gradients are those of
    the cross-entropy against (1 - teacher_weight) * onehot(y) + teacher_weight * teacher; the
    loss returned is the one-hot one either way.

    masks[l] is hidden layer l's dropout mask, already divided by the keep probability
    (inverted dropout), or None. Each line's comment gives its math; B is the batch size.
    Callers run it under np.errstate(all="ignore"): an overflowing exp is handled below, and
    a diverging run shows as an inf or nan loss, which the training loop checks.

    The same code steps a population of K models (FusedEngine with K > 1): every array then has a
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
    ws.sum_matmul(counts, ws.ones_v, ws.counts_sum_col)  # counts_sum = counts summed over the row
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
    if teacher is None:
        ws.dlogits_flat[target] -= c  # - c * onehot(y)
    else:  # against a soft target q = (1-a) onehot(y) + a teacher: c * (softmax - q)
        ws.dlogits_flat[target] -= c * (1.0 - teacher_weight)
        dlogits -= teacher * (np.asarray(c)[..., None] * teacher_weight)
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


def _loss_max_shifted(ws: Workspace) -> float:
    """The loss part of `forward_backward` for rows where a logit beats the target's by more
    than exp can take: shift each row by its max instead (makemore part 4's logit_maxes), so
    that exp(logits - max) <= 1 cannot overflow."""
    logits, counts, counts_sum, matmul = ws.logits, ws.dlogits, ws.counts_sum, ws.sum_matmul
    logit_maxes = ws.target_logit  # of the logits as shifted so far
    np.maximum.reduce(logits, axis=-1, out=logit_maxes)
    logits -= logit_maxes[..., None]  # norm_logits = logits - logit_maxes
    np.exp(logits, out=counts)
    matmul(counts, ws.ones_v, ws.counts_sum_col)
    np.log(counts_sum, out=ws.nll)
    ws.nll += logit_maxes  # -log p(y_i) = log counts_sum_i - norm_logits[i, y_i], which is -max_i
    return float(np.add.reduce(ws.nll, axis=None)) / ws.B


def loss_and_grads(params: Mapping[str, np.ndarray | torch.Tensor], xb, yb, cfg: MLPConfig,
                   dropout_mask=None, teacher=None, teacher_weight: float = 0.0,
                   precision: str = "float32") -> tuple[float, dict[str, np.ndarray]]:
    """The fused engine's forward and backward pass as a pure function, in float64.

    params: name -> array (the names and shapes of `model.param_shapes(cfg)`); xb: (B,
    block_size) character indices; yb: (B,) targets. dropout_mask: None for no dropout, or one
    (B, hidden) array per hidden layer (a bare array for a single layer), 1 where a unit is
    kept and 0 where it is dropped; kept units are scaled by 1/(1 - cfg.dropout) as F.dropout
    scales them. teacher: None, or (B, vocab_size) distributions mixed into the targets with
    weight teacher_weight (see forward_backward). precision: "bfloat16" rounds every matrix
    product's inputs and result to bfloat16 as the engine does (TrainConfig.precision); the rest
    stays float64. Returns (mean cross-entropy, name -> d loss / d param).
    """
    arrays = {n: np.array(params[n].detach().cpu().numpy() if isinstance(params[n], torch.Tensor) else params[n],
                          dtype=np.float64) for n in param_shapes(cfg)}
    for n, shape in param_shapes(cfg).items():
        if arrays[n].shape != shape:
            raise ValueError(f"parameter {n} has shape {arrays[n].shape}, the config says {shape}")
    flat, grads = flat_buffer(cfg, np.float64)
    idx = np.asarray(xb, dtype=np.intp)
    y = np.asarray(yb, dtype=np.intp)
    masks: list[np.ndarray | None] = [None] * cfg.layers
    if dropout_mask is not None:
        if np.ndim(dropout_mask) == 2:
            dropout_mask = [dropout_mask]
        if len(dropout_mask) != cfg.layers:
            raise ValueError(f"need one dropout mask per hidden layer ({cfg.layers}), got {len(dropout_mask)}")
        masks = [np.asarray(m, dtype=np.float64) / (1.0 - cfg.dropout) for m in dropout_mask]
    ws = Workspace(cfg, idx.shape[0], np.float64, dropout=dropout_mask is not None, precision=precision)
    with np.errstate(all="ignore"):
        loss = forward_backward(Params(arrays, cfg), Params(grads, cfg, flat), ws, idx, y, masks, 1.0,
                                 None if teacher is None else np.asarray(teacher, dtype=np.float64), teacher_weight)
    return loss, grads
