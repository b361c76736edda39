"""A training step captured as a CUDA graph, replayed for every later step.

On a GPU a small model's step (the lecture's MLP, or a GRU of 512 units over 16 positions) is a
few hundred tiny kernels: their launches and the host's bookkeeping, not the arithmetic, set
its speed. PyTorch's CUDA graphs (torch.cuda.CUDAGraph; "whole-network capture" in its docs)
record the kernels of one step, forward, backward and optimizer update, once, and replay them
with one launch: the inputs are copied into the graph's own tensors and the loss read from its
own output, on the device. What makes a step capturable:

- shapes that do not change: every minibatch has B rows, and a sequence model reads its whole
  window (models.base.Model.trim_windows is turned off: trimming the common padding reads the
  padding's length back to the host);
- nothing read back to the host: the optimizer keeps its step count and learning rate on the
  device (optimizers' CAPTURABLE, torch's capturable=True), weight decay multiplies by a device
  scalar, the loss stays a tensor (engines.AutogradEngine.update);
- dropout and weight drop draw from the default CUDA generator, which a graph advances on every
  replay (PyTorch registers it with the graph), so each replay draws new masks.

The first WARMUP_STEPS steps run eagerly (they initialise cuBLAS, cuDNN and the optimizer's
state, as the docs require before a capture); the capture then records the next step's kernels
without running them, and replay runs it. A capture that fails (an operation that cannot be
captured) leaves the engine eager, with a note.
"""

from __future__ import annotations

import sys

import torch

WARMUP_STEPS = 3


class CapturedStep:
    """Member 0's update (AutogradEngine.update) as a CUDA graph over static input tensors."""

    def __init__(self, engine, idx: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None):
        self.idx, self.y = idx.clone(), y.clone()
        self.teacher = None if teacher is None else teacher.clone()
        self.graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(self.graph):
            self.loss = engine.update(0, self.idx, self.y, self.teacher)

    def replay(self, idx: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        self.idx.copy_(idx, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        if teacher is not None:
            self.teacher.copy_(teacher, non_blocking=True)
        self.graph.replay()
        return self.loss.clone()  # the next replay overwrites the graph's own output


def capture(engine, idx: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None) -> CapturedStep | None:
    """A CapturedStep of the engine's member 0 for minibatches shaped as these (a capture records
    the kernels without running them: the step on these inputs has run eagerly already); None
    (the engine stays eager) where the step cannot be captured."""
    try:
        step = CapturedStep(engine, idx, y, teacher)
    except (RuntimeError, NotImplementedError) as e:
        print(f"note: the training step could not be captured as a CUDA graph ({str(e).splitlines()[0]}); "
              f"it runs eagerly", file=sys.stderr)
        engine.optimizers[0].zero_grad(set_to_none=True)
        return None
    return step
