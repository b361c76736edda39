"""A count model as a teacher: its next-character distributions as soft targets.

Distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"), with Bengio et
al. 2003's Kneser-Ney model as the teacher: each example's target is

    (1 - teacher) * onehot(y) + teacher * P_KN(. | its last teacher_context characters)

(config.TrainConfig.teacher). The Kneser-Ney model is counted on the training split and tuned on
dev (baselines.fit_on_dev); a budget run counts it once and hands the same model to its teacher and
its mixture (training.py). Its distributions for every training example are kept, examples x V
floats, so a vocabulary of thousands of characters is refused (TEACHER_MAX_BYTES).

The teacher has counted these very examples: on them it is sharper than on unseen text, which
is what it hands the student.
"""

from __future__ import annotations

import numpy as np

from .data import Examples
from .errors import UserError
from .ngram import NGramModel

# More than a run should hold: a budget run trains without a teacher above it, and --teacher
# says so.
TEACHER_MAX_BYTES = 1 << 30


def teacher_bytes(train_examples: int, vocab_size: int) -> int:
    """Memory the teacher's targets take: a float32 distribution per training example."""
    return train_examples * vocab_size * 4


def check_fits(train_examples: int, vocab_size: int) -> None:
    need = teacher_bytes(train_examples, vocab_size)
    if need > TEACHER_MAX_BYTES:
        raise UserError(f"--teacher keeps the count model's distribution for every training example: "
                        f"{need / 2**30:.1f} GiB for this data ({train_examples:,} examples x "
                        f"{vocab_size:,} characters; limit {TEACHER_MAX_BYTES / 2**30:.0f} GiB); "
                        f"train without it (--teacher 0)")


def teacher_targets(ngram: NGramModel, train: Examples) -> np.ndarray:
    """P_KN(next char | its last `ngram.context` characters) for every example of the training
    split `train`: (N, V) float32, row i for example i."""
    check_fits(len(train), ngram.vocab_size)
    out = np.empty((len(train), ngram.vocab_size), np.float32)
    rows = 1 << 16  # contexts gathered at a time (probs() bounds its own float64 work)
    for start in range(0, len(train), rows):
        positions = np.arange(start, min(start + rows, len(train)), dtype=np.int64)
        out[start:start + rows] = ngram.probs(train.contexts(positions, ngram.context)).numpy()
    return out
