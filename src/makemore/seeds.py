"""A seed's stream of random numbers, in which sample i, step t has a number of its own.

Every sampler reads its uniform numbers here by (sample index, step), never in the order they
are asked for: so a seed fixes each sample whatever the chunks, the requests drawn together or
the number asked for (sampling.py, labels.sample_labels, serve).
"""

from __future__ import annotations

import secrets

import numpy as np

from .errors import UserError

# SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number generators"):
# output k of the stream keyed by `key` is mix(key + k * GOLDEN).
_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
MASK64 = (1 << 64) - 1


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, in place on a uint64 array: a bijection with full avalanche."""
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


# Sample i, step t reads output i * 2^STEP_BITS + t: distinct for every t < 2^24 and i < 2^40.
STEP_BITS, MAX_SAMPLES = 24, 1 << 40


def stream_key(seed: int | None) -> np.uint64:
    """The key of a seed's stream (a random one without a seed): nearby seeds, unrelated streams."""
    if seed is None:
        seed = secrets.randbits(64)
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UserError(f"the seed must be a whole number, got {seed!r}")
    return mix64(np.array([int(seed) & MASK64], dtype=np.uint64))[0]


def uniforms(key: np.uint64 | np.ndarray, index: np.ndarray, step: int) -> np.ndarray:
    """The uniform number in [0, 1) for step `step` of each sample in `index` (uint64):
    output index * 2^STEP_BITS + step of the SplitMix64 stream keyed by `key` (one key, or one
    per sample). A sample's numbers depend on its key and its own index only, never on which
    others are drawn with it."""
    x = (index << np.uint64(STEP_BITS)) | np.uint64(step)
    x *= _GOLDEN
    x += key
    return (mix64(x) >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)  # 24 bits: exact in float32
