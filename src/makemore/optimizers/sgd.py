"""Plain minibatch stochastic gradient descent, the lecture's `p.data += -lr * p.grad`.

Weight decay, where asked for, is applied by the engines as p <- p * (1 - lr*wd) before the
step, which for plain SGD is exactly torch.optim.SGD's L2 penalty: p - lr*(g + wd*p).
"""

from __future__ import annotations

import numpy as np
import torch

NAME = "sgd"


def torch_optimizer(param_groups, cfg) -> torch.optim.Optimizer:
    # weight decay is the engine's (see the module doc), so the groups carry none
    return torch.optim.SGD([{**g, "weight_decay": 0.0} for g in param_groups], lr=cfg.lr)


def sparse_optimizer(params, cfg) -> torch.optim.Optimizer:
    """SGD on sparse gradients (a hashed table): torch.optim.SGD updates only the rows read."""
    return torch.optim.SGD(params, lr=cfg.lr)


class Flat:
    """SGD on the fused engine's flat buffers. `folds_lr`: the engine scales the backward pass
    by each member's lr (it is linear in dlogits), so the gradients arrive as lr * g and the
    update is one subtraction."""

    folds_lr = True

    def __init__(self, views, shape: tuple[int, int], dtype, cfgs):
        pass

    def update(self, params: np.ndarray, lr_times_grads: np.ndarray, lrs: np.ndarray) -> None:
        params -= lr_times_grads

    def state(self, k: int) -> dict[str, torch.Tensor]:
        return {}  # plain SGD keeps no state

    def load(self, k: int, state) -> None:
        pass
