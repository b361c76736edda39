"""Engines: how one training step of K >= 1 models is computed.

The training loop (training.py) knows nothing of how a step is computed; an engine does forward,
backward and update for the K members of a run (K = 1 for a plain run, K seeds for a seed
ensemble, K learning rates for a sweep), behind one interface:

    engine.models                          the K models (nn.Modules), updated in place
    engine.step(idx, y, lrs, teacher=None) -> losses
                                           idx (K, B, block_size), y (K, B) int64 arrays,
                                           lrs (K,): one update of every member; returns the
                                           K minibatch losses computed before it. teacher:
                                           (K, B, V) distributions mixed into the targets
                                           (TrainConfig.teacher), or None
    engine.member_state(k) -> dict         member k's optimizer (and RNG) state, for checkpoints
    engine.load_member_state(k, state)     ... and back, on --resume
    engine.freeze(k, weights)              a diverged member keeps `weights` (stepped at lr 0)
    engine.grad_hook                       None, or a function called with the gradients
                                           between backward and update (data parallelism)
    engine.name, engine.precision          what it is and the number format of its products
                                           (TrainConfig.precision, decided: runtime.resolve)

AutogradEngine is the lecture's step (loss.backward(), then a torch optimizer) and runs every
model; fused_engine.FusedEngine computes the MLP's step with a hand-written backward pass,
faster. make_engine makes the one runtime.resolve chose.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import graphs, optimizers
from .config import TrainConfig
from .models import Model


class AutogradEngine:
    """The lecture's step for each member in turn: forward, loss.backward(), optimizer step.

    Each member has its own torch optimizer and its own torch random state (dropout draws from
    torch's global generator): the state is swapped in around the member's step, so that
    member k draws what a solo run with its seed draws.
    """

    name = "autograd"

    def __init__(self, models: Sequence[Model], train_cfgs: Sequence[TrainConfig], capture: bool = False):
        if len(models) != len(train_cfgs) or not models:
            raise ValueError(f"need one train config per model, got {len(models)} models and {len(train_cfgs)} configs")
        self.models, self.cfgs = list(models), list(train_cfgs)
        self.precision = train_cfgs[0].precision  # shared by the members (train.SHARED)
        self.device = next(models[0].parameters()).device
        self.optimizers, self.sparse_optimizers, self.decayed, self.rng_states = [], [], [], []
        for model, cfg in zip(models, train_cfgs):
            named = [(n, p) for n, p in model.named_parameters() if n not in model.sparse_parameters]
            sparse = [p for n, p in model.named_parameters() if n in model.sparse_parameters]
            decays = [p for n, p in named if model.decays(n, p)]
            keeps = [p for n, p in named if not model.decays(n, p)]
            groups = [g for g in ({"params": decays}, {"params": keeps}) if g["params"]]
            captured = capture and self.device.type == "cuda" and not sparse  # only asked of an optimizer that says CAPTURABLE
            self.optimizers.append(optimizers.get(cfg.optimizer).torch_optimizer(
                groups, cfg, **({"capturable": True} if captured else {})))
            self.sparse_optimizers.append(optimizers.sparse_optimizer(cfg.optimizer, sparse, cfg) if sparse else None)
            self.decayed.append(decays)
            self.rng_states.append(self._seeded_state(cfg.seed))
            # the teacher's term reads every character's log-probability: a model that computes
            # its training loss without them (an adaptive softmax) is asked for them
            model.needs_logits = cfg.teacher > 0
            model.trim_windows = self.device.type == "cpu"  # models.base.Model.trim_windows
        self.grad_hook = None
        # CUDA graphs (graphs.py): a solo run on a GPU replays its whole step as one graph once
        # its first steps have run eagerly (lazy initialisations, the optimizer's state)
        self.graphs = (capture and self.device.type == "cuda" and len(self.models) == 1
                       and not any(self.sparse_optimizers))  # a sparse gradient's shape changes every step
        self.captured, self.eager_steps = None, 0

    def _seeded_state(self, seed: int) -> dict:
        state = {"cpu": torch.Generator().manual_seed(seed).get_state()}
        if self.device.type == "cuda":
            with torch.random.fork_rng(devices=[self.device]):
                torch.cuda.manual_seed(seed)
                state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _swap_rng(self, k: int):
        """Install member k's random state; return a function that saves it back."""
        state = self.rng_states[k]
        torch.set_rng_state(state["cpu"])
        if "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)

        def save() -> None:
            state["cpu"] = torch.get_rng_state()
            if "cuda" in state:
                state["cuda"] = torch.cuda.get_rng_state(self.device)

        return save

    def step(self, idx, y, lrs: np.ndarray, teacher=None):
        """One update of every member. idx, y, teacher: NumPy arrays, or tensors already on the
        device (graphs.py's minibatches). Returns the K losses: NumPy on a CPU, a tensor on a GPU,
        left there (the loop reads it at its logging points: no host synchronisation per step)."""
        idx_t, y_t, teacher_t = (None if a is None else torch.as_tensor(a).to(self.device, non_blocking=True)
                                 for a in (idx, y, teacher))
        if self.captured is not None:
            self.set_lr(0, float(lrs[0]))
            return self.captured.replay(idx_t[0], y_t[0], None if teacher_t is None else teacher_t[0])[None]
        losses = []
        for k in range(len(self.models)):
            save_rng = self._swap_rng(k)
            self.set_lr(k, float(lrs[k]))
            losses.append(self.update(k, idx_t[k], y_t[k], None if teacher_t is None else teacher_t[k]))
            save_rng()
        self.eager_steps += 1
        if self.graphs and self.eager_steps == graphs.WARMUP_STEPS:
            self.captured = graphs.capture(self, idx_t[0], y_t[0], None if teacher_t is None else teacher_t[0])
        if self.device.type == "cpu":
            return np.array([loss.item() for loss in losses])
        return torch.stack(losses)

    def member_optimizers(self, k: int) -> list[torch.optim.Optimizer]:
        """Member k's optimizers: its dense parameters', and its sparse parameters' where it has any."""
        return [o for o in (self.optimizers[k], self.sparse_optimizers[k]) if o is not None]

    def set_lr(self, k: int, lr: float) -> None:
        for group in (g for o in self.member_optimizers(k) for g in o.param_groups):
            if torch.is_tensor(group["lr"]):  # a captured step reads it from the device
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def update(self, k: int, idx: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        """Member k's forward, backward and optimizer step; its minibatch loss (detached). What a
        CUDA graph captures (graphs.py): nothing in it reads a value back to the host."""
        model, optimizer, cfg = self.models[k], self.optimizers[k], self.cfgs[k]
        # precision bfloat16: torch.autocast runs the forward's matrix products in bfloat16
        # and the loss (cross-entropy, log-softmax) in float32; backward mirrors the casts
        # (a captured step must cast the weights afresh on every replay: autocast's cache of casts
        # would hold those of the capture)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16",
                            cache_enabled=not self.graphs):
            logits, loss = model(idx, y)
            objective = loss
            if teacher is not None:  # cross-entropy against (1-a) onehot(y) + a teacher
                a, soft_targets = cfg.teacher, teacher
                if logits.dim() == 3:  # a sequence model's columns: (B, T, V), leading padding trimmed
                    soft_targets = soft_targets[:, soft_targets.shape[1] - logits.shape[1]:]
                # a column that predicts nothing has an all-zero teacher row: it counts for nothing
                soft = -(soft_targets * F.log_softmax(logits, dim=-1)).sum() / soft_targets.sum()
                objective = (1.0 - a) * loss + a * soft  # the one-hot loss is the one reported
        for o in self.member_optimizers(k):
            o.zero_grad(set_to_none=True)
        objective.backward()
        if self.grad_hook is not None:
            self.grad_hook([p.grad for p in model.parameters() if p.grad is not None])
        if cfg.weight_decay:  # decoupled weight decay, p <- p * (1 - lr*wd), as the fused engine does it
            lr = optimizer.param_groups[0]["lr"]
            with torch.no_grad():
                torch._foreach_mul_(self.decayed[k], 1.0 - lr * cfg.weight_decay)
        for o in self.member_optimizers(k):
            o.step()
        return loss.detach()

    def freeze(self, k: int, weights) -> None:
        with torch.no_grad():
            for n, t in self.models[k].state_dict().items():
                t.copy_(weights[n])
        for o in self.member_optimizers(k):
            o.state.clear()

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Optimizer state as 'optim.<key>.<parameter>' tensors, and the torch random state."""
        out = {}
        for name, p in self.models[k].named_parameters():
            state = next((o.state[p] for o in self.member_optimizers(k) if p in o.state), {})
            for key, value in state.items():
                out[f"optim.{key}.{name}"] = torch.as_tensor(value).detach().clone().cpu()
        out["rng.torch"] = self.rng_states[k]["cpu"].clone()
        if self.captured is not None:  # the graph's replays draw from the generator itself, unswapped
            self.rng_states[k]["cuda"] = torch.cuda.get_rng_state(self.device)
        if "cuda" in self.rng_states[k]:
            out["rng.cuda"] = self.rng_states[k]["cuda"].clone()
        return out

    def load_member_state(self, k: int, state) -> None:
        sparse = set(self.models[k].sparse_parameters)
        for name, p in self.models[k].named_parameters():
            optimizer = self.sparse_optimizers[k] if name in sparse else self.optimizers[k]
            prefix_entries = {key.split(".")[1]: v for key, v in state.items()
                              if key.startswith("optim.") and key.endswith("." + name)}
            if prefix_entries:
                capturable = optimizer.param_groups[0].get("capturable", False)  # its step count on the device
                optimizer.state[p] = {key: v.to(p.device) if key != "step" or capturable else v.cpu()
                                      for key, v in prefix_entries.items()}
        if "rng.torch" in state:
            self.rng_states[k]["cpu"] = state["rng.torch"].clone()
        if "rng.cuda" in state and "cuda" in self.rng_states[k]:
            self.rng_states[k]["cuda"] = state["rng.cuda"].clone()


class Stack:
    """K single-member engines stepped one after another: members that gain nothing from
    sharing one batched step (models past OpenBLAS's one-thread size, see fused.py)."""

    def __init__(self, engines: Sequence):
        self.engines = list(engines)
        self.name, self.precision = self.engines[0].name, self.engines[0].precision
        self.models = [e.models[0] for e in self.engines]

    @property
    def grad_hook(self):
        return self.engines[0].grad_hook

    @grad_hook.setter
    def grad_hook(self, hook) -> None:
        for e in self.engines:
            e.grad_hook = hook

    def step(self, idx: np.ndarray, y: np.ndarray, lrs: np.ndarray, teacher: np.ndarray | None = None) -> np.ndarray:
        return np.concatenate([e.step(idx[k:k + 1], y[k:k + 1], lrs[k:k + 1],
                                      None if teacher is None else teacher[k:k + 1])
                               for k, e in enumerate(self.engines)])

    def freeze(self, k: int, weights) -> None:
        self.engines[k].freeze(0, weights)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        return self.engines[k].member_state(0)

    def load_member_state(self, k: int, state) -> None:
        self.engines[k].load_member_state(0, state)


def make_engine(models: Sequence[Model], train_cfgs: Sequence[TrainConfig], setup=None):
    """The engine of these members on `setup` (runtime.Setup: its engine, precision and each
    member's dropout seed; resolved from the configs if not given). The fused engine's members
    share one batched step (a population) while every product is small enough to gain from it;
    larger ones step one after another."""
    from . import fused
    from .fused_engine import FusedEngine
    from .runtime import resolve

    setup = setup or resolve(models[0].cfg, train_cfgs)
    cfgs = [replace(c, seed=seed, precision=setup.precision) for c, seed in zip(train_cfgs, setup.dropout_seeds)]
    if setup.engine == "autograd":
        return AutogradEngine(models, cfgs, capture=setup.cuda_graphs)
    if len(models) == 1:
        return FusedEngine(models, cfgs)
    one_optimizer = len({c.optimizer for c in cfgs}) == 1
    if one_optimizer and fused.small_products(models[0].cfg, cfgs[0].batch_size):
        return FusedEngine(models, cfgs)
    return Stack([FusedEngine([m], [c]) for m, c in zip(models, cfgs)])
