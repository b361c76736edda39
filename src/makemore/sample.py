"""Using a trained model: sampling new words and scoring given ones.

Both work on a *predictor*: a function from contexts (N, predictor.context_size) of character
ids to log-probabilities (N, vocab) of the next character. An MLP is one predictor; an n-gram model,
a mixture of the two (Bengio et al. 2003, section 4) or a seed ensemble are others, and
sampling and scoring do not care which. (A predictor may also carry `.logits`, any function
whose softmax is its distribution, as an MLP's does: sampling then skips the log_softmax.)

Sampling is the lecture's loop, batched and streamed: the samples of a chunk advance one
character at a time together, so a step costs one forward pass for the whole chunk, not one
per name; chunks are drawn one after another (`sample_chunks`), so memory does not grow with
the number of samples. Samples are tagged as in Karpathy's makemore: `train`, `dev`, `test`
if the word appears in that split, else `new`.
"""

from __future__ import annotations

import math
import secrets
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .data import SPLITS, Vocab, build_examples
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
    def scores(ctx: torch.Tensor) -> torch.Tensor:
        return logits(ctx[:, ctx.shape[1] - block_size:]).float()

    def predict(ctx: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(scores(ctx), dim=-1)

    predict.logits = scores  # sampling needs only the logits: it skips the log_softmax
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


# ----------------------------------------------------------------------------------------
# Sampling, streamed in chunks

# How much is drawn at once. A chunk is at most MAX_CHUNK samples, and fewer for a large
# vocabulary, so that one step's (chunk x vocab) arrays stay below CHUNK_CELLS entries
# (16 MiB of float32) whatever the vocabulary: 65,536 samples for names' 27 characters,
# 1,048 for 4,000. Nothing in a draw grows with n.
MAX_CHUNK = 1 << 16
CHUNK_CELLS = 1 << 22
# Every context a model can see is a string of context_size characters. When there are few of
# them (27^3 = 19,683 for the lecture's model, 27^4 = 531,441 for `fast`), the next-character
# distribution of a context is computed once and kept in a table: a step is a row lookup
# instead of a forward pass. At most TABLE_CELLS entries (64 MiB of float32). When n is large
# (at least contexts / 8: ~8 steps per name) every row is computed up front, in a few large
# batches; otherwise each row the first time a sample reaches it (20 `fast` names visit ~100
# contexts, a million ~130,000), in many small batches, which torch's thread pool handled
# badly on the busy 2-core machine.
TABLE_CELLS = 1 << 24

# SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number generators"):
# output k of the stream keyed by `key` is mix(key + k * GOLDEN).
_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, in place on a uint64 array: a bijection with full avalanche."""
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


# Sample i, step t reads output i * 2^STEP_BITS + t: distinct for every t < 2^24 and i < 2^40.
STEP_BITS, MAX_SAMPLES = 24, 1 << 40


def _uniforms(key: np.uint64, index: np.ndarray, step: int) -> np.ndarray:
    """The uniform number in [0, 1) for step `step` of each sample in `index` (uint64):
    output index * 2^STEP_BITS + step of the SplitMix64 stream keyed by `key`. A sample's
    numbers depend on the key and its own index only, never on which others are drawn with it."""
    x = (index << np.uint64(STEP_BITS)) | np.uint64(step)
    x *= _GOLDEN
    x += key
    return (_mix64(x) >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)  # 24 bits: exact in float32


def _cdf(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """Cumulative next-character probabilities (N, vocab) from logits or log-probs."""
    z = logits.float()
    if temperature != 1.0:
        # the largest entry becomes exactly 0 before dividing, so no temperature overflows them all
        z = (z - z.max(dim=1, keepdim=True).values).div_(temperature)
    if top_k is not None and top_k < z.shape[1]:
        kth = torch.topk(z, top_k, dim=1).values[:, -1:]
        z = z.masked_fill(z < kth, -math.inf)
    return torch.softmax(z, dim=1).cumsum_(dim=1)


def _invert(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw, one uniform number per row: the first index whose cumulative
    probability exceeds u * total. Same distribution as torch.multinomial, several times
    cheaper on many short rows. The target is kept strictly below the total, so rounding in
    u * total can never select a character past the last one with probability > 0."""
    total = cdf[:, -1]
    target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target[:, None], right=True).squeeze(1)


def _invert_np(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """_invert on NumPy rows (argmax finds the first True). Single-threaded NumPy: on a busy
    machine, torch's thread pool spent more time synchronising on these small steps than
    computing them (~10x slower than NumPy on 2 shared cores)."""
    total = cdf[:, -1]
    target = np.minimum(u * total, np.nextafter(total, np.float32(0)))
    return (cdf > target[:, None]).argmax(axis=1)


class _Sampler:
    """Draws samples by their index in one seeded stream, any number at a time.

    Only the samples still running are fed to the model at each step (names end after ~7
    characters but a chunk runs as long as its longest). Step t of sample i uses uniform
    number (i, t) of a SplitMix64 stream keyed by the seed, so sample i is a function of the
    seed and i alone: how the work is cut into chunks never changes what is drawn. (Up to
    float rounding: a model's logits for one context can differ in the last bit between batch
    sizes, and the table route computes them in other batches than the direct one; that moves
    a draw only when its uniform falls within that distance of a boundary. Between the table
    and the direct route we saw 0 changed names in 200,000 for `lecture`, 0 to 4 for `fast`.)
    """

    def __init__(self, predictor: Predictor, vocab: Vocab, seed: int | None = None, temperature: float = 1.0,
                 top_k: int | None = None, prefix: str = "", max_len: int = 64, expected: int = 0):
        if not (math.isfinite(temperature) and temperature > 0):
            raise UserError(f"temperature must be a positive number, got {temperature}")
        if top_k is not None and top_k < 1:
            raise UserError(f"top-k must be at least 1, got {top_k}")
        if not 1 <= max_len < 1 << STEP_BITS:
            raise UserError(f"max_len must be between 1 and {(1 << STEP_BITS) - 1}, got {max_len}")
        if vocab.boundary in prefix:
            raise UserError(f"the prefix {prefix!r} contains the boundary token {vocab.boundary!r}")
        prefix_ids = vocab.encode(prefix)  # a UserError for characters the model never saw
        self.temperature, self.top_k, self.max_len = float(temperature), top_k, max_len
        # any function whose softmax is the predictor's distribution will do: an MLP's logits skip a log_softmax
        self.scores = getattr(predictor, "logits", predictor)
        self.device, self.T, self.V = predictor.device, predictor.context_size, vocab.size
        if seed is None:
            seed = secrets.randbits(64)
        self.key = _mix64(np.array([int(seed) & _MASK64], dtype=np.uint64))[0]  # nearby seeds, unrelated streams
        self.chunk_size = max(1, min(MAX_CHUNK, CHUNK_CELLS // self.V))
        start = ([0] * self.T + prefix_ids)[len(prefix_ids):]  # the last T characters: boundary padding, then prefix
        self.start_context = torch.tensor([start], dtype=torch.long, device=self.device)
        self.contexts = self.V ** self.T
        self.table = self.known = None
        if self.contexts * self.V <= TABLE_CELLS:
            self.table = np.zeros((self.contexts, self.V), dtype=np.float32)  # row id: sum_t c_t V^(T-1-t)
            self.known = np.zeros(self.contexts, dtype=bool)
            if self.contexts <= 8 * expected:
                self._fill(np.arange(self.contexts))
        self.start_id = sum(c * self.V ** (self.T - 1 - t) for t, c in enumerate(start))
        self.ids_dtype = np.min_scalar_type(self.V - 1)
        codepoints = np.array([ord(c) for c in vocab.chars], dtype="<u4")
        codepoints[0] = ord("\n")  # the boundary token ends a line
        self.codepoints = codepoints
        self.prefix_codepoints = np.array([ord(c) for c in prefix], dtype="<u4")

    @torch.no_grad()
    def _fill(self, ids: np.ndarray) -> None:
        """Compute the table rows (CDFs) of the contexts `ids`, a chunk at a time."""
        T, V, dev = self.T, self.V, self.device
        powers = V ** torch.arange(T - 1, -1, -1, device=dev)
        for i in range(0, len(ids), self.chunk_size):
            part = ids[i:i + self.chunk_size]
            digits = (torch.from_numpy(part).to(dev)[:, None] // powers) % V
            self.table[part] = _cdf(self.scores(digits), self.temperature, self.top_k).cpu().numpy()
            self.known[part] = True

    @torch.no_grad()
    def draw(self, start: int, count: int) -> list[str]:
        """Samples start .. start + count - 1 of the stream (count <= chunk_size)."""
        dev, V = self.device, self.V
        out = np.zeros((count, self.max_len + 1), dtype=self.ids_dtype)  # the last column stays 0: an end
        active = np.arange(count)
        index = np.arange(start, start + count, dtype=np.uint64)
        if self.table is not None:
            context = np.full(count, self.start_id, dtype=np.int64)  # context ids into the table
        else:
            context = self.start_context.expand(count, -1).contiguous()
        width = self.max_len + 1
        for t in range(self.max_len):
            u = _uniforms(self.key, index[active], t)
            if self.table is not None:
                new = context[~self.known[context]]
                if len(new):
                    self._fill(np.unique(new))
                ix = _invert_np(np.take(self.table, context, axis=0), u)
            else:
                cdf = _cdf(self.scores(context), self.temperature, self.top_k)
                ix = _invert(cdf, torch.from_numpy(u).to(dev)).clamp_(max=V - 1).cpu().numpy()
            out[active, t] = ix
            going = ix != 0
            if not going.any():
                width = t + 1
                break
            active, ix = active[going], ix[going]
            if self.table is not None:
                context = (context[going] * V + ix) % self.contexts
            else:
                kept = context[torch.from_numpy(going).to(dev)]
                context = torch.cat([kept, torch.from_numpy(ix).to(dev)[:, None]], dim=1)[:, 1:]
        return self._decode(out[:, :width])

    def _decode(self, ids: np.ndarray) -> list[str]:
        """Rows of ids, each ending at its first boundary token, -> strings (prefix + word).

        Without a loop over characters or names: the code points of every row up to and
        including its end (a newline) are cut out in one mask, decoded as one string and split."""
        ends = (ids == 0).argmax(axis=1)
        keep = np.arange(ids.shape[1]) <= ends[:, None]
        if len(self.prefix_codepoints):
            P = len(self.prefix_codepoints)
            keep = np.concatenate([np.ones((len(ids), P), dtype=bool), keep], axis=1)
            codepoints = np.concatenate([np.broadcast_to(self.prefix_codepoints, (len(ids), P)),
                                         self.codepoints[ids]], axis=1)[keep]
        else:
            codepoints = self.codepoints[ids[keep]]
        words = codepoints.tobytes().decode("utf-32-le", errors="surrogatepass").split("\n")
        words.pop()  # after the last newline
        return words


def _tagger(splits: dict[str, list[str]]) -> Callable[[list[str]], list[str]]:
    """words -> makemore's novelty tags: the first split a word appears in, else `new`.
    One dict lookup per word (the dict is built once, ~the size of the word list)."""
    first_split = {}
    for name in reversed(SPLITS):
        first_split.update(dict.fromkeys(splits[name], name))
    return lambda words: [first_split.get(w, "new") for w in words]


def tag_words(words: list[str], splits: dict[str, list[str]]) -> list[str]:
    """makemore's novelty tags: the first split the word appears in, else `new`."""
    return _tagger(splits)(words)


def sample_chunks(predictor: Predictor, vocab: Vocab, n: int, seed: int | None = None,
                  splits: dict[str, list[str]] | None = None, unique: bool = False, new_only: bool = False,
                  temperature: float = 1.0, top_k: int | None = None, prefix: str = "", max_len: int = 64,
                  chunk_size: int | None = None) -> Iterator[tuple[list[str], list[str] | None]]:
    """Draw `n` words in chunks: yields (words, tags) a chunk at a time, tags None without `splits`.

    Memory is bounded whatever n is: a chunk holds at most `chunk_size` samples (by default
    chosen from the vocabulary size, see MAX_CHUNK), except that `unique` remembers every word
    it has yielded. The seed fixes the stream: sample i depends on the seed and i only, so the
    same seed gives the same words whatever the chunk size, and a smaller n gives the first
    words of a larger one (but for rare float-rounding ties, see _Sampler; the same seed and n
    always give the same words on one machine). `unique` and `new_only` (which needs `splits`) skip words of that
    stream; a chunk may then hold fewer words, or none. They give up, yielding fewer than n,
    after a long run of draws in a row that are all skipped (the model has nothing more to give).
    Arguments are checked here, before anything is drawn: errors are UserErrors.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"-n must be at least 1, got {n}")
    if n > MAX_SAMPLES:  # beyond it, the random numbers of two samples would coincide
        raise UserError(f"-n can be at most 2^40 = {MAX_SAMPLES:,}, got {n:,}")
    if new_only and splits is None:
        raise UserError("new_only needs the splits to tell new words from known ones")
    if chunk_size is not None and chunk_size < 1:
        raise UserError(f"chunk_size must be at least 1, got {chunk_size}")
    sampler = _Sampler(predictor, vocab, seed, temperature, top_k, prefix, max_len, expected=n)
    chunk_size = min(chunk_size or sampler.chunk_size, sampler.chunk_size)
    tag = _tagger(splits) if splits is not None else None
    filtering = unique or new_only
    patience = min(max(10_000, 100 * n), 1_000_000)

    def chunks():
        made, drawn, misses, seen = 0, 0, 0, set()
        while made < n:
            want = n - made
            count = min(chunk_size, max(64, 2 * want) if filtering else want)
            words = sampler.draw(drawn, count)
            drawn += count
            tags = tag(words) if tag is not None else None
            if filtering:
                kept_words, kept_tags = [], []
                for i, w in enumerate(words):
                    if (new_only and tags[i] != "new") or (unique and w in seen):
                        misses += 1
                        continue
                    misses = 0
                    if unique:
                        seen.add(w)
                    kept_words.append(w)
                    if tags is not None:
                        kept_tags.append(tags[i])
                    if len(kept_words) == want:
                        break
                words, tags = kept_words, (kept_tags if tags is not None else None)
            made += len(words)
            yield words, tags
            if misses >= patience:
                return

    return chunks()


def sample(predictor: Predictor, vocab: Vocab, n: int, seed: int | None = None,
           temperature: float = 1.0, top_k: int | None = None, prefix: str = "", max_len: int = 64) -> list[str]:
    """Draw `n` words; each starts with `prefix` and ends at the boundary token (or max_len)."""
    chunks = sample_chunks(predictor, vocab, n, seed, temperature=temperature, top_k=top_k, prefix=prefix,
                           max_len=max_len)
    return [w for words, _ in chunks for w in words]


def sample_tagged(predictor: Predictor, vocab: Vocab, splits: dict[str, list[str]], n: int,
                  seed: int | None = None, unique: bool = False, new_only: bool = False, **kwargs) -> list[dict]:
    """Sample with tags; `unique`/`new_only` keep drawing until n qualify (or give up)."""
    chunks = sample_chunks(predictor, vocab, n, seed, splits=splits, unique=unique, new_only=new_only, **kwargs)
    return [{"text": w, "tag": t} for words, tags in chunks for w, t in zip(words, tags)]


@torch.no_grad()
def score(predictor: Predictor, vocab: Vocab, words: list[str]) -> list[dict]:
    """Each word's NLL under the model: total, per character (end token counted), perplexity."""
    for w in words:
        if not w:
            raise UserError("cannot score an empty word")
        vocab.encode(w)  # raises a clear error for characters the model never saw
        if vocab.boundary in w:
            raise UserError(f"{w!r} contains the boundary token {vocab.boundary!r}")
    target_logp = target_log_probs(predictor, *build_examples(words, vocab, predictor.context_size))
    results, i = [], 0
    for w in words:
        k = len(w) + 1
        lp = target_logp[i:i + k]
        nll = float(-lp.sum())
        results.append({
            "word": w,
            "nll": nll,
            "nll_per_char": nll / k,
            "perplexity": math.exp(nll / k),
            "chars": [{"char": c if c != vocab.boundary else "<end>", "prob": float(p)}
                      for c, p in zip(w + vocab.boundary, lp.exp().tolist())],
        })
        i += k
    return results
