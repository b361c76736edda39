"""Using a trained model: sampling new words and scoring given ones.

Both work on a *predictor* (predict.py): a function from contexts (N, predictor.context_size)
of character ids to log-probabilities (N, vocab) of the next character. A trained model is one
predictor; an n-gram model, a mixture of the two (Bengio et al. 2003, section 4) or a seed
ensemble are others, and sampling and scoring do not care which.

Sampling is the lecture's loop, batched: all samples advance one character at a time
together, so the per-step cost is one forward pass for the whole batch, not one per name.
Samples are tagged as in Karpathy's makemore: `train`, `dev`, `test` if the word appears in
that split, else `new`.
"""

from __future__ import annotations

import math
import numpy as np
import torch
import torch.nn.functional as F

from .data import Examples, Vocab
from .errors import UserError
from .predict import Predictor, target_log_probs

@torch.no_grad()
def sample(predictor: Predictor, vocab: Vocab, n: int, seed: int | None = None,
           temperature: float = 1.0, top_k: int | None = None, prefix: str = "", max_len: int = 64) -> list[str]:
    """Draw `n` words; each starts with `prefix` and ends at the boundary token (or max_len)."""
    if n < 1:
        raise UserError(f"-n must be at least 1, got {n}")
    if not temperature > 0:
        raise UserError(f"temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top-k must be at least 1, got {top_k}")
    prefix_ids = vocab.encode(prefix)
    device, block_size = predictor.device, predictor.context_size
    g = torch.Generator(device=device)
    g.manual_seed(seed if seed is not None else torch.seed())
    context = torch.zeros((n, block_size), dtype=torch.long, device=device)
    for ix in prefix_ids:
        context = torch.cat([context[:, 1:], torch.full((n, 1), ix, device=device)], dim=1)
    out = torch.zeros((n, max_len), dtype=torch.long, device=device)
    # Only the samples still running are fed to the model: names end after ~7 characters on
    # average but the batch runs as long as its longest, so this does several times less work.
    active = torch.arange(n, device=device)
    for t in range(max_len):
        logp = predictor(context) / temperature
        if vocab.unk_id is not None:  # the unknown-character token stands for rare characters: never draw it
            logp[:, vocab.unk_id] = -math.inf
        if top_k is not None and top_k < logp.shape[1]:
            kth = torch.topk(logp, top_k, dim=1).values[:, -1:]
            logp = logp.masked_fill(logp < kth, -math.inf)
        # Inverse-CDF draw, one uniform number per sample: the first index whose cumulative
        # (unnormalised) probability exceeds u * total. Same distribution as torch.multinomial,
        # several times cheaper on many short rows.
        cdf = torch.exp(logp - logp.max(dim=1, keepdim=True).values).cumsum_(dim=1)
        u = torch.rand((cdf.shape[0], 1), generator=g, device=device, dtype=cdf.dtype) * cdf[:, -1:]
        ix = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)
        out[active, t] = ix
        running = ix != 0
        if not bool(running.any()):
            break
        active, context = active[running], torch.cat([context[running, 1:], ix[running, None]], dim=1)
    return _decode_rows(out.cpu().numpy(), vocab, prefix)


def _decode_rows(ids: np.ndarray, vocab: Vocab, prefix: str) -> list[str]:
    """Rows of ids up to the first boundary token -> strings, without a per-character loop."""
    lengths = np.where((ids == 0).any(axis=1), (ids == 0).argmax(axis=1), ids.shape[1])
    chars = np.array(list(vocab.chars), dtype="<U1")[ids]
    width = ids.shape[1]
    # view each row of 1-char strings as one fixed-width string, then cut it at its length
    joined = chars.view(f"<U{width}").ravel() if width else np.array([""] * len(ids))
    return [prefix + s[:k] for s, k in zip(joined.tolist(), lengths.tolist())]


def tag_words(words: list[str], splits: dict[str, list[str]]) -> list[str]:
    """makemore's novelty tags: the first split the word appears in, else `new`. Splits given
    as (frozen)sets are used as they are (a server tags many batches against the same words)."""
    sets = {name: ws if isinstance(ws, (set, frozenset)) else set(ws) for name, ws in splits.items()}
    return [next((name for name in ("train", "dev", "test") if w in sets[name]), "new") for w in words]


def sample_tagged(predictor: Predictor, vocab: Vocab, splits: dict[str, list[str]], n: int,
                  seed: int | None = None, unique: bool = False, new_only: bool = False,
                  max_rounds: int = 50, **kwargs) -> list[dict]:
    """Sample with tags; `unique`/`new_only` keep drawing batches until n qualify."""
    rng = np.random.default_rng(seed)
    results: list[dict] = []
    seen: set[str] = set()
    for round_ in range(max_rounds):
        want = n - len(results)
        draw = want if not (unique or new_only) else max(2 * want, 64)
        round_seed = seed if round_ == 0 and seed is not None else int(rng.integers(2**62))
        words = sample(predictor, vocab, draw, seed=round_seed, **kwargs)
        for word, tag in zip(words, tag_words(words, splits)):
            if (unique and word in seen) or (new_only and tag != "new"):
                continue
            seen.add(word)
            results.append({"text": word, "tag": tag})
            if len(results) == n:
                return results
        if not (unique or new_only):
            break
    return results


@torch.no_grad()
def score(predictor: Predictor, vocab: Vocab, words: list[str], top: int = 0) -> list[dict]:
    """Each word's NLL under the model: total, per character (end token counted), perplexity.
    With `top` > 0, each position also lists the `top` most likely next characters (what the
    model expected instead), from the same forward pass."""
    for w in words:
        if not w:
            raise UserError("cannot score an empty word")
        vocab.encode(w)  # raises a clear error for characters the model never saw
        if vocab.boundary in w:
            raise UserError(f"{w!r} contains the boundary token {vocab.boundary!r}")
    examples = Examples.from_words(words, vocab)
    if top > 0:
        X, Y = examples.tensors(predictor.context_size)
        logp = torch.cat([predictor(X[i:i + 65536].to(predictor.device)).double().cpu()  # (positions, vocab)
                          for i in range(0, X.shape[0], 65536)])
        target_logp = logp.gather(1, Y[:, None]).squeeze(1)
        top_p, top_ix = logp.topk(min(top, vocab.size), dim=1)
        top_p, top_ix = top_p.exp().tolist(), top_ix.tolist()
    else:
        target_logp = target_log_probs(predictor, examples)

    def shown(c: str) -> str:
        return c if c != vocab.boundary else "<end>"

    results, i = [], 0
    for w in words:
        k = len(w) + 1
        lp = target_logp[i:i + k]
        nll = float(-lp.sum())
        chars = [{"char": shown(c), "prob": float(p)} for c, p in zip(w + vocab.boundary, lp.exp().tolist())]
        if top > 0:
            for j, entry in enumerate(chars):
                entry["top"] = [{"char": shown(vocab.chars[ix]), "prob": p}
                                for ix, p in zip(top_ix[i + j], top_p[i + j])]
        results.append({"word": w, "nll": nll, "nll_per_char": nll / k, "perplexity": math.exp(nll / k),
                        "chars": chars})
        i += k
    return results
