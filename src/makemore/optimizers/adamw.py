"""AdamW: Adam (Kingma & Ba 2015) with decoupled weight decay (Loshchilov & Hutter 2019), as
torch.optim.AdamW computes it. Weight decay, p <- p * (1 - lr*wd), is applied by the engines
before the step, on the tensors the model says decay (models.base.Model.decays)."""

from __future__ import annotations

import numpy as np
import torch

NAME = "adamw"
EPS = 1e-8  # torch.optim.AdamW's default


# torch.optim.AdamW can keep its step count and learning rate on the GPU (capturable): its step
# then reads nothing back to the host, and a CUDA graph can capture it (graphs.py).
CAPTURABLE = True


def torch_optimizer(param_groups, cfg, capturable: bool = False) -> torch.optim.Optimizer:
    # weight decay is the engine's (see the module doc), so the groups carry none
    groups = [{**g, "weight_decay": 0.0} for g in param_groups]
    if capturable:  # the learning rate a tensor on the device, which the engine fills each step
        lr = torch.tensor(float(cfg.lr), device=groups[0]["params"][0].device)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=EPS, capturable=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=EPS)


def sparse_optimizer(params, cfg) -> torch.optim.Optimizer:
    """Adam for sparse gradients (a hashed table); no weight decay (Model.decays)."""
    return RowAdam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=EPS)


class RowAdam(torch.optim.Optimizer):
    """"Lazy" Adam, torch.optim.SparseAdam's update: only the rows a sparse gradient names move,
    and only their moments decay. Computed by gathering those rows of dense moments, updating
    them and scattering them back: on a 2^20-row table read by a few thousand contexts a step,
    SparseAdam's sparse-tensor arithmetic took a quarter of the MLP's step."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = EPS):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.coalesce()  # one row per index, repeated lookups summed
                rows, g = grad.indices()[0], grad.values()
                state = self.state[p]
                if not state:
                    state.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                t = float(state["step"])
                m = state["exp_avg"].index_select(0, rows).lerp_(g, 1.0 - beta1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                step_size = group["lr"] * (1.0 - beta2 ** t) ** 0.5 / (1.0 - beta1 ** t)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])), alpha=-step_size)


def adamw_step(g: np.ndarray, m: np.ndarray, v: np.ndarray, step: np.ndarray, beta1, beta2, t: int, lr) -> None:
    """Adam's moments and step (Kingma & Ba 2015, algorithm 1), as torch.optim.AdamW computes
    them; updates m and v in place and leaves in `step` what to subtract from the parameters:

        m <- m + (1 - beta1) * (g - m)             (torch: exp_avg.lerp_(g, 1 - beta1))
        v <- beta2 * v + (1 - beta2) * g^2
        step = lr/(1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    The last line is computed as Kingma & Ba (end of section 2) suggest, one pass shorter:
    with s = sqrt(1 - beta2^t), step = (lr*s/(1 - beta1^t)) * m/(sqrt(v) + eps*s).
    beta1, beta2 and lr are (K, 1) arrays, one per row (model) of the buffers.
    """
    def c(x):  # a coefficient in the buffers' precision
        return x.astype(step.dtype)

    np.subtract(g, m, out=step)
    step *= c(1.0 - beta1)
    m += step  # m = lerp(m, g, 1 - beta1)
    v *= c(beta2)
    np.multiply(g, g, out=step)
    step *= c(1.0 - beta2)
    v += step  # v = beta2 v + (1 - beta2) g^2
    s = (1.0 - beta2 ** t) ** 0.5
    np.sqrt(v, out=step)
    step += c(EPS * s)
    np.divide(m, step, out=step)
    step *= c(lr * s / (1.0 - beta1 ** t))  # = lr * m_hat / (sqrt(v_hat) + eps)


class Flat:
    """AdamW on the fused engine's flat (K, P) buffers: first and second moments in buffers
    shaped like the parameters, one step count (the K models step together)."""

    folds_lr = False

    def __init__(self, views, shape: tuple[int, int], dtype, cfgs):
        self.views = views  # buffer -> {parameter name: (K, *shape) view}
        self.m_flat = np.zeros(shape, dtype)  # first moment (torch: exp_avg)
        self.v_flat = np.zeros(shape, dtype)  # second moment (exp_avg_sq)
        self.step_flat = np.zeros(shape, dtype)
        self.m, self.v = views(self.m_flat), views(self.v_flat)
        self.beta1 = np.array([[float(c.betas[0])] for c in cfgs])  # (K, 1)
        self.beta2 = np.array([[float(c.betas[1])] for c in cfgs])
        self.t = 0

    def update(self, params: np.ndarray, grads: np.ndarray, lrs: np.ndarray) -> None:
        self.t += 1
        adamw_step(grads, self.m_flat, self.v_flat, self.step_flat, self.beta1, self.beta2, self.t,
                   lrs.reshape(-1, 1))
        params -= self.step_flat

    def reset(self, k: int) -> None:
        """Zero member k's moments (a frozen member: its update is then 0 * finite = 0)."""
        self.m_flat[k] = 0.0
        self.v_flat[k] = 0.0

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's state under torch.optim.AdamW's names as the autograd engine saves them
        ('optim.exp_avg.W1', 'optim.exp_avg_sq.W1', 'optim.step.W1'), so that a run resumes
        with either engine."""
        out: dict[str, torch.Tensor] = {}
        for n in self.m:
            out[f"optim.exp_avg.{n}"] = torch.from_numpy(np.array(self.m[n][k]))
            out[f"optim.exp_avg_sq.{n}"] = torch.from_numpy(np.array(self.v[n][k]))
            out[f"optim.step.{n}"] = torch.tensor(float(self.t))  # torch keeps a float tensor
        return out

    def load(self, k: int, state) -> None:
        for n in self.m:
            for moment, key in ((self.m, f"optim.exp_avg.{n}"), (self.v, f"optim.exp_avg_sq.{n}")):
                if key in state:
                    value = state[key]
                    if tuple(value.shape) != moment[n][k].shape:
                        raise ValueError(f"{key} has shape {tuple(value.shape)}, expected {moment[n][k].shape}")
                    moment[n][k] = value.detach().cpu().numpy()
            if f"optim.step.{n}" in state:
                self.t = int(state[f"optim.step.{n}"])
