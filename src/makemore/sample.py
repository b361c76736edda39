"""Using a trained model: sampling new words and scoring given ones.

Both work on a *predictor*: a function from contexts (N, predictor.context_size) of character
ids to log-probabilities (N, vocab) of the next character. An MLP is one predictor; an n-gram model,
a mixture of the two (Bengio et al. 2003, section 4) or a seed ensemble are others, and
sampling and scoring do not care which.

Sampling is the lecture's loop, batched: all samples advance one character at a time
together, so the per-step cost is one forward pass for the whole batch, not one per name.
Samples are tagged as in Karpathy's makemore: `train`, `dev`, `test` if the word appears in
that split, else `new`.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .data import Vocab, build_examples
from .errors import UserError

Predictor = Callable[[torch.Tensor], torch.Tensor]


def make_predictor(fn: Callable[[torch.Tensor], torch.Tensor], context_size: int, device="cpu") -> Predictor:
    """Tag a contexts -> log-probs function with the context length it reads (its last columns)."""
    fn.context_size = context_size
    fn.device = torch.device(device)
    return fn


def fast_logits(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's logits for contexts (N, block_size), computed for inference by tables.

    The first layer reads x = [C[c_1], ..., C[c_T]], so x @ W1 = sum_t C[c_t] @ W1_t, where W1_t
    is W1's rows for position t. With the table P[t, c] = C[c] @ W1_t (block_size x vocab x
    hidden, computed once) the first layer is T row lookups and adds (one embedding_bag) instead
    of a (T*emb_dim x hidden) product: ~10x less arithmetic for the lecture's sizes. Direct
    connections get the same treatment. A snapshot: build it again after more training.
    """
    cfg = model.cfg
    T, E, V = cfg.block_size, cfg.emb_dim, cfg.vocab_size
    with torch.no_grad():
        def table(W):  # (T*E, out) -> (T*V, out): row t*V + c is C[c] @ W_t
            return torch.einsum("ve,teo->tvo", model.C, W.view(T, E, -1)).reshape(T * V, -1).contiguous()

        (W1, b1), *deeper = model.hidden_weights
        first, direct = table(W1), table(model.W_direct) if cfg.direct else None
        deeper = [(W.detach(), b.detach()) for W, b in deeper]
        W_out, b_out, b1 = model.W_out.detach(), model.b_out.detach(), b1.detach()
    offsets = torch.arange(T, device=first.device) * V

    def logits(ctx: torch.Tensor) -> torch.Tensor:
        rows = ctx + offsets
        # in place: a fresh large tensor per operation costs more in page faults than the math
        h = _tanh_(F.embedding_bag(rows, first, mode="sum").add_(b1))
        for W, b in deeper:
            h = _tanh_(torch.addmm(b, h, W))
        out = torch.addmm(b_out, h, W_out)
        if direct is not None:
            out += F.embedding_bag(rows, direct, mode="sum")
        return out

    return logits


def _tanh_(h: torch.Tensor) -> torch.Tensor:
    """tanh in place; on the CPU by NumPy, whose vectorised tanh ran ~5x faster than torch's here."""
    if h.device.type == "cpu":
        a = h.numpy()
        np.tanh(a, out=a)
        return h
    return h.tanh_()


def mlp_predictor(model) -> Predictor:
    """The model as a predictor (in eval mode: no dropout), by `fast_logits`."""
    block_size = model.cfg.block_size
    model.eval()
    logits = fast_logits(model)

    @torch.no_grad()
    def predict(ctx: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits(ctx[:, ctx.shape[1] - block_size:]).float(), dim=-1)

    return make_predictor(predict, block_size, next(model.parameters()).device)


def ensemble_predictor(models) -> Predictor:
    """A seed ensemble: the mean of the members' next-character probabilities (not of their
    logits: averaging probabilities is the mixture of the models, each weighted 1/K, and its
    log-likelihood can only beat the members' average), log(1/K sum_k softmax(logits_k))."""
    models = list(models)
    if not models:
        raise UserError("an ensemble needs at least one model")
    block_size = models[0].cfg.block_size
    if any(m.cfg.block_size != block_size for m in models):
        raise UserError("the members of an ensemble must read the same context length")
    log_k = math.log(len(models))
    for m in models:
        m.eval()
    member_logits = [fast_logits(m) for m in models]

    @torch.no_grad()
    def predict(ctx: torch.Tensor) -> torch.Tensor:
        ctx = ctx[:, ctx.shape[1] - block_size:]
        logp = torch.stack([F.log_softmax(f(ctx).float(), dim=-1) for f in member_logits])  # (K, N, vocab)
        return torch.logsumexp(logp, dim=0) - log_k  # log of the mean probability, without underflow

    return make_predictor(predict, block_size, next(models[0].parameters()).device)


@torch.no_grad()
def target_log_probs(predictor: Predictor, X: torch.Tensor, Y: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """log p(Y_i | X_i) for every example, float64 on the CPU, computed in chunks."""
    parts = [torch.zeros(0, dtype=torch.float64)]
    for i in range(0, X.shape[0], chunk):
        logp = predictor(X[i:i + chunk].to(predictor.device))
        parts.append(logp.gather(1, Y[i:i + chunk].to(logp.device)[:, None]).squeeze(1).double().cpu())
    return torch.cat(parts)


def predictor_nll(predictor: Predictor, X: torch.Tensor, Y: torch.Tensor, chunk: int = 65536) -> float:
    """Mean negative log-likelihood of Y under any predictor (model.mean_nll for one MLP)."""
    return -target_log_probs(predictor, X, Y, chunk).sum().item() / X.shape[0]


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
    X, Y = build_examples(words, vocab, predictor.context_size)
    if top > 0:
        logp = torch.cat([predictor(X[i:i + 65536].to(predictor.device)).double().cpu()  # (positions, vocab)
                          for i in range(0, X.shape[0], 65536)])
        target_logp = logp.gather(1, Y[:, None]).squeeze(1)
        top_p, top_ix = logp.topk(min(top, vocab.size), dim=1)
        top_p, top_ix = top_p.exp().tolist(), top_ix.tolist()
    else:
        target_logp = target_log_probs(predictor, X, Y)

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
