"""Using a trained model: sampling new words and scoring given ones.

Both work on a *predictor* (predict.py): a function from contexts (N, predictor.context_size)
of character ids to log-probabilities (N, vocab) of the next character. A trained model is one
predictor; an n-gram model, a mixture of the two (Bengio et al. 2003, section 4) or a seed
ensemble are others, and sampling and scoring do not care which. (A predictor may also carry
`.logits`, any function whose softmax is its distribution, as a model's does: sampling then
skips the log_softmax.)

Sampling is the lecture's loop, batched and streamed: the samples of a chunk advance one
character at a time together, so a step costs one forward pass for the whole chunk, not one
per name; chunks are drawn one after another (`sample_chunks`), so memory does not grow with
the number of samples. Samples are tagged as in Karpathy's makemore: `train`, `dev`, `test`
if the word appears in that split, else `new`.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Callable, Iterator

import numpy as np
import torch

from .conditions import Constraints, Stream, read_conditions
from .data import SPLITS, Examples, Vocab
from .errors import UserError
from .predict import Predictor, check_unlabelled, check_vocab, target_log_probs
from .seeds import MAX_SAMPLES, STEP_BITS, stream_key, uniforms

# ----------------------------------------------------------------------------------------
# Sampling, streamed in chunks

# How much is drawn at once. A chunk is at most MAX_CHUNK samples, and fewer for a large
# vocabulary, so that one step's (chunk x vocab) arrays stay below CHUNK_CELLS entries
# (16 MiB of float32) whatever the vocabulary: 65,536 samples for a few dozen characters,
# 1,048 for 4,000. Nothing in a draw grows with n.
MAX_CHUNK = 1 << 16
CHUNK_CELLS = 1 << 22
# The first chunk of a stream is FIRST_CHUNK samples, each next one twice the last, up to the
# chunk size: the first line is written about as soon as `-n 1`'s (a chunk of 65,536 samples of a
# model mixed with its count model took 6 s), and large n still draws in large chunks. The
# chunking never changes what is drawn (sample i depends on the seed and i only).
FIRST_CHUNK = 64
# Every context a model can see is a string of context_size characters. When there are few of
# them (27^3 = 19,683 for the lecture's model, 27^4 = 531,441 for `fast`), the next-character
# distribution of a context is computed once and kept in a table: a step is a row lookup
# instead of a forward pass. At most TABLE_CELLS entries (64 MiB of float32). When n is large
# (at least contexts / 8: ~8 steps per name) every row is computed up front, in a few large
# batches; otherwise each row the first time a sample reaches it (20 `fast` names visit ~100
# contexts, a million ~130,000), in many small batches, which torch's thread pool handled
# badly on a busy machine.
TABLE_CELLS = 1 << 24

# The cap on a sample without a max-len condition: one still going after MAX_LEN characters past
# its prefix is cut there (so that a model that seldom writes the end token cannot run on).
MAX_LEN = 64

def _cdf(logits: torch.Tensor, temperature: float, top_k: int | None, banned: int | None = None) -> torch.Tensor:
    """Cumulative next-character probabilities (N, vocab) from logits or log-probs; the
    `banned` id (the unknown-character token: it stands for rare characters) is never drawn."""
    z = logits.float()
    if banned is not None:
        z = z.clone()
        z[:, banned] = -math.inf
    if temperature != 1.0:
        # the largest entry becomes exactly 0 before dividing, so no temperature overflows them all;
        # divided in float64, since a temperature below float32's range (1e-100) would be 0 there
        # and give NaNs: the others' gaps overflow to -inf instead, the greedy choice of the limit
        z = (z - z.max(dim=1, keepdim=True).values).double().div_(temperature).float()
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

    `draw_rows` draws samples of several streams at once, each row from its own stream's
    numbers: concurrent seeded requests share the forward passes and still get their seed's
    samples. A complete `table` (context_table) may be passed in and shared: it is only read.
    """

    def __init__(self, predictor: Predictor, vocab: Vocab, seed: int | None = None, temperature: float = 1.0,
                 top_k: int | None = None, prefix: str = "", max_len: int = MAX_LEN, expected: int = 0,
                 table: np.ndarray | None = None):
        check_unlabelled(predictor)
        check_vocab(predictor, vocab)
        if (isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating))
                or not (math.isfinite(temperature) and temperature > 0)):
            raise UserError(f"temperature must be a positive number, got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
            raise UserError(f"top-k must be a whole number, at least 1, got {top_k!r}")
        if (isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer))
                or not 1 <= max_len < 1 << STEP_BITS):
            raise UserError(f"max_len must be a whole number between 1 and {(1 << STEP_BITS) - 1}, got {max_len!r}")
        prefix = vocab.normalized(prefix)  # as the data was read (NFC, by default; conditions.read_conditions)
        if vocab.boundary in prefix:
            raise UserError(f"the prefix {prefix!r} contains the boundary token {vocab.boundary!r}")
        prefix_ids = vocab.encode(prefix)  # a UserError for characters the model never saw
        self.temperature, self.top_k, self.max_len = float(temperature), top_k, max_len
        self.banned = vocab.unk_id
        # any function whose softmax is the predictor's distribution will do: an MLP's logits skip a log_softmax
        self.scores = getattr(predictor, "logits", predictor)
        self.device, self.T, self.V = predictor.device, predictor.context_size, vocab.size
        self.key = stream_key(seed)
        self.chunk_size = max(1, min(MAX_CHUNK, CHUNK_CELLS // self.V))
        start = ([0] * self.T + prefix_ids)[len(prefix_ids):]  # the last T characters: boundary padding, then prefix
        self.start_context = torch.tensor([start], dtype=torch.long, device=self.device)
        self.contexts = self.V ** self.T
        self.table = self.known = None  # known: which rows are computed; None once they all are
        self.drawn = 0  # samples drawn so far: once they are many, the table's other rows are computed too
        if table is not None:
            if table.shape != (self.contexts, self.V):
                raise ValueError(f"a table of shape {table.shape} for {self.contexts} contexts of {self.V}")
            self.table = table
        elif self.contexts * self.V <= TABLE_CELLS:
            self.table = np.zeros((self.contexts, self.V), dtype=np.float32)  # row id: sum_t c_t V^(T-1-t)
            self.known = np.zeros(self.contexts, dtype=bool)
            if self.contexts <= 8 * expected:
                self._fill(np.arange(self.contexts))
                self.known = None
        self.start_id = sum(c * self.V ** (self.T - 1 - t) for t, c in enumerate(start))
        self.ids_dtype = np.min_scalar_type(self.V - 1)
        # symbol id -> its code points: one each for characters (a table), one or more for grapheme
        # clusters (id -> offset and count into one flat array); the boundary token ends a line
        symbols = ["\n", *vocab.chars[1:]]
        self.symbol_sizes = np.array([len(c) for c in symbols], dtype=np.int64)
        self.symbol_offsets = np.cumsum(self.symbol_sizes) - self.symbol_sizes
        self.codepoints = np.array([ord(c) for c in "".join(symbols)], dtype="<u4")
        self.one_code_point_each = bool((self.symbol_sizes == 1).all())
        self.prefix_text = prefix
        self.prefix_codepoints = np.array([ord(c) for c in prefix], dtype="<u4")
        self.nfc = vocab.normalize == "nfc"

    @torch.no_grad()
    def _fill(self, ids: np.ndarray) -> None:
        """Compute the table rows (CDFs) of the contexts `ids`, a chunk at a time."""
        T, V, dev = self.T, self.V, self.device
        powers = V ** torch.arange(T - 1, -1, -1, device=dev)
        for i in range(0, len(ids), self.chunk_size):
            part = ids[i:i + self.chunk_size]
            digits = (torch.from_numpy(part).to(dev)[:, None] // powers) % V
            self.table[part] = _cdf(self.scores(digits), self.temperature, self.top_k, self.banned).cpu().numpy()
            self.known[part] = True

    def draw(self, start: int, count: int, limit: int | None = None) -> list[str | None]:
        """Samples start .. start + count - 1 of the seed's stream (count <= chunk_size)."""
        return self.draw_rows(np.full(count, self.key, dtype=np.uint64),
                              np.arange(start, start + count, dtype=np.uint64), limit)

    @torch.no_grad()
    def draw_rows(self, keys: np.ndarray, index: np.ndarray, limit: int | None = None) -> list[str | None]:
        """Sample index[r] of the stream keyed by keys[r], for every row r (at most chunk_size).

        With a `limit` (a max-len condition), a sample still going after `limit` characters (past
        the prefix) is stopped there and returned as None: it would be longer than `limit`, and
        drawing the rest of it would be wasted; max_len, the cap, does not apply, so no sample is
        cut. Without one, a sample still going after max_len characters is cut there and kept:
        it has max_len characters past the prefix, which no sample that ended has (it ends at
        max_len - 1 at most), so a cut sample can be told apart (`makemore sample` says so)."""
        dev, V = self.device, self.V
        count = len(index)
        self.drawn += count
        if self.known is not None and self.contexts <= 8 * self.drawn:  # as if `expected` had said so
            self._fill(np.flatnonzero(~self.known))
            self.known = None
        rejecting = limit is not None
        steps = limit + 1 if rejecting else self.max_len  # a word of `limit` characters ends at step `limit`
        out = np.zeros((count, steps + 1), dtype=self.ids_dtype)  # the last column stays 0: an end
        active = np.arange(count)
        if self.table is not None:
            context = np.full(count, self.start_id, dtype=np.int64)  # context ids into the table
        else:
            context = self.start_context.expand(count, -1).contiguous()
        width, unfinished = steps + 1, None
        for t in range(steps):
            u = uniforms(keys[active], index[active], t)
            if self.table is not None:
                if self.known is not None:
                    new = context[~self.known[context]]
                    if len(new):
                        self._fill(np.unique(new))
                ix = _invert_np(np.take(self.table, context, axis=0), u)
            else:
                cdf = _cdf(self.scores(context), self.temperature, self.top_k, self.banned)
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
        else:
            unfinished = active if rejecting else None  # still going after step `limit`: too long
        words: list[str | None] = self._decode(out[:, :width])
        if unfinished is not None:
            for r in unfinished.tolist():
                words[r] = None
        return words

    def _decode(self, ids: np.ndarray) -> list[str]:
        """Rows of ids, each ending at its first boundary token, -> strings (prefix + word).

        Without a loop over characters or names: the code points of every row up to and
        including its end (a newline) are cut out in one mask, decoded as one string and split.
        Symbols of several code points (grapheme clusters) are expanded in one gather. With NFC
        data, the text is brought to NFC (symbols side by side can compose: e + a lone accent)."""
        ends = (ids == 0).argmax(axis=1)
        keep = np.arange(ids.shape[1]) <= ends[:, None]
        if not self.one_code_point_each:
            kept = ids[keep]
            counts = self.symbol_sizes[kept]
            total = int(counts.sum())
            # for each output code point: its symbol's offset + its place within the symbol
            gather = np.repeat(self.symbol_offsets[kept] - (np.cumsum(counts) - counts), counts) + np.arange(total)
            text = self.codepoints[gather].tobytes().decode("utf-32-le", errors="surrogatepass")
            if self.prefix_text:
                lines = text.split("\n")
                lines.pop()  # after the last newline
                text = "".join(f"{self.prefix_text}{w}\n" for w in lines)
            return self._finish(text)
        if len(self.prefix_codepoints):
            P = len(self.prefix_codepoints)
            keep = np.concatenate([np.ones((len(ids), P), dtype=bool), keep], axis=1)
            codepoints = np.concatenate([np.broadcast_to(self.prefix_codepoints, (len(ids), P)),
                                         self.codepoints[ids]], axis=1)[keep]
        else:
            codepoints = self.codepoints[ids[keep]]
        return self._finish(codepoints.tobytes().decode("utf-32-le", errors="surrogatepass"))

    def _finish(self, text: str) -> list[str]:
        """Lines of decoded text -> words, in NFC where the data was read so (the whole text
        at once: a line end never composes with its neighbours)."""
        if self.nfc and not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        words = text.split("\n")
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


def _check_n(n) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise UserError(f"n (the number of samples) must be a whole number, got {n!r}")
    if n < 1:
        raise UserError(f"n (the number of samples, -n) must be at least 1, got {n}")
    if n > MAX_SAMPLES:  # beyond it, the random numbers of two samples would coincide
        raise UserError(f"n (the number of samples, -n) can be at most 2^40 = {MAX_SAMPLES:,}, got {n:,}")


# ----------------------------------------------------------------------------------------
# Drawing


def _limit(constraints: Constraints, prefix: str, vocab: Vocab, max_len: int) -> int | None:
    """Checks the conditions; how many characters a sample may add to the prefix under a max-len
    condition (None without one). That condition replaces the cap `max_len`: samples longer than
    it are left out, never cut, so `--max-len 200` gives samples of up to 200 characters."""
    constraints.check(vocab, prefix, max_len)
    limit = constraints.limit(prefix, vocab)
    if limit is not None and limit >= (1 << STEP_BITS) - 1:
        raise UserError(f"the maximum length can be at most {(1 << STEP_BITS) - 2 + vocab.length(prefix):,}, "
                        f"got {constraints.max_len:,}")
    return limit


def sample_chunks(predictor: Predictor, vocab: Vocab, n: int, seed: int | None = None,
                  splits: dict[str, list[str]] | None = None, unique: bool = False, new_only: bool = False,
                  temperature: float = 1.0, top_k: int | None = None, prefix: str = "", max_len: int = MAX_LEN,
                  chunk_size: int | None = None, constraints: Constraints | None = None,
                  ) -> Iterator[tuple[list[str], list[str] | None]]:
    """Draw `n` words in chunks: yields (words, tags) a chunk at a time, tags None without `splits`.

    Memory is bounded whatever n is: a chunk holds at most `chunk_size` samples (by default
    chosen from the vocabulary size, see MAX_CHUNK), except that `unique` remembers every word
    it has yielded. The seed fixes the stream: sample i depends on the seed and i only, so the
    same seed gives the same words whatever the chunk size, and a smaller n gives the first
    words of a larger one (but for rare float-rounding ties, see _Sampler; the same seed and n
    always give the same words on one machine). `unique`, `new_only` (which needs `splits`)
    and `constraints` skip words of that stream (see Constraints: what is left is the model's
    distribution conditioned on them); a chunk may then hold fewer words, or none. `unique`
    gives up quietly, yielding fewer than n, after a long run of repeats (the model has nothing
    more to give); conditions that almost no sample meets end in a UserError (see conditions.Stream).
    Arguments are checked here, before anything is drawn: errors are UserErrors.
    """
    _check_n(n)
    if new_only and splits is None:
        raise UserError("new_only needs the splits to tell new words from known ones")
    if chunk_size is not None and chunk_size < 1:
        raise UserError(f"chunk_size must be at least 1, got {chunk_size}")
    constraints, prefix = read_conditions(constraints, prefix, vocab)
    # expected: the first chunk's, so that the table's rows are not all computed before the first
    # sample of a large n; the sampler computes the rest once enough samples are drawn
    sampler = _Sampler(predictor, vocab, seed, temperature, top_k, prefix, max_len, expected=min(n, FIRST_CHUNK))
    limit = _limit(constraints, prefix, vocab, max_len)
    chunk_size = min(chunk_size or sampler.chunk_size, sampler.chunk_size)
    first = min(FIRST_CHUNK, chunk_size)
    tag = _tagger(splits) if splits is not None else None
    stream = Stream(n, sampler.key, constraints.meets(vocab, new_only), unique, constraints.describe(new_only))

    def chunks():
        size = first
        while not stream.done:
            words = sampler.draw(stream.drawn, stream.count(size), limit)
            size = min(2 * size, chunk_size)
            yield stream.take(words, tag(words) if tag is not None else None)
        if stream.hopeless is not None:  # after the samples kept so far
            raise stream.hopeless

    return chunks()


def sample_streams(predictor: Predictor, vocab: Vocab, splits: dict[str, list[str]],
                   requests: list[tuple[int, int | None]], new_only: bool = False,
                   constraints: Constraints | None = None, temperature: float = 1.0, top_k: int | None = None,
                   prefix: str = "", max_len: int = MAX_LEN,
                   table: np.ndarray | None = None) -> list[list[dict] | UserError]:
    """Several requests of the same settings, each (n, seed), drawn together: each gets the
    samples sample_tagged(n, seed) gives with these settings, but every decoding step is one
    forward pass (or table lookup) for the samples of all of them, each drawn from its own
    seed's stream. The result of a request is its tagged samples, or the UserError that ended
    it (hopeless conditions) without ending the others. `table`: a complete context_table for
    this predictor, temperature and top_k, to share instead of computing rows again.
    """
    for n, _ in requests:
        _check_n(n)
    if new_only and splits is None:
        raise UserError("new_only needs the splits to tell new words from known ones")
    constraints, prefix = read_conditions(constraints, prefix, vocab)
    sampler = _Sampler(predictor, vocab, 0, temperature, top_k, prefix, max_len,
                       expected=sum(n for n, _ in requests), table=table)
    tag, limit, size = _tagger(splits), _limit(constraints, prefix, vocab, max_len), sampler.chunk_size
    meets, what = constraints.meets(vocab, new_only), constraints.describe(new_only)
    streams = [Stream(n, stream_key(seed), meets, what=what) for n, seed in requests]
    results: list = [[] for _ in requests]
    while True:
        # each live request's next rows (stream, first index, count), drawn a chunk at a time
        pending = [(i, streams[i].drawn, streams[i].count(size)) for i, s in enumerate(streams) if not s.done]
        if not pending:
            return [s.hopeless or r for s, r in zip(streams, results)]
        while pending:
            parts, room = [], size
            while pending and room:
                i, start, count = pending.pop(0)
                k = min(count, room)
                parts.append((i, start, k))
                if k < count:  # the rest of it opens the next draw
                    pending.insert(0, (i, start + k, count - k))
                room -= k
            keys = np.concatenate([np.full(k, streams[i].key, dtype=np.uint64) for i, _, k in parts])
            index = np.concatenate([np.arange(start, start + k, dtype=np.uint64) for _, start, k in parts])
            words = sampler.draw_rows(keys, index, limit)
            tags, at = tag(words), 0
            for i, _, k in parts:
                if not streams[i].done:  # a request done (or given up) earlier in this round has its samples
                    kept, kept_tags = streams[i].take(words[at:at + k], tags[at:at + k])
                    results[i] += [{"text": w, "tag": t} for w, t in zip(kept, kept_tags)]
                at += k


def context_table(predictor: Predictor, vocab: Vocab, temperature: float = 1.0,
                  top_k: int | None = None) -> np.ndarray | None:
    """Every context's next-character CDF at this temperature and top-k, computed in full, for
    sample_streams to share (it is only read); None for a model with too many contexts for a
    table (see TABLE_CELLS). Seeded draws through it are then the same whatever else is drawn
    with them: no row is computed in a batch that depends on the other requests."""
    return _Sampler(predictor, vocab, 0, temperature, top_k, expected=MAX_SAMPLES).table


def sample(predictor: Predictor, vocab: Vocab, n: int, seed: int | None = None,
           temperature: float = 1.0, top_k: int | None = None, prefix: str = "", max_len: int = MAX_LEN,
           constraints: Constraints | None = None) -> list[str]:
    """Draw `n` words; each starts with `prefix` and ends at the boundary token, or is cut after
    `max_len` more characters (a cap: without an end, it has exactly max_len), and meets the
    `constraints`. A max-len condition replaces the cap: longer samples are left out, not cut."""
    chunks = sample_chunks(predictor, vocab, n, seed, temperature=temperature, top_k=top_k, prefix=prefix,
                           max_len=max_len, constraints=constraints)
    return [w for words, _ in chunks for w in words]


def sample_tagged(predictor: Predictor, vocab: Vocab, splits: dict[str, list[str]], n: int,
                  seed: int | None = None, unique: bool = False, new_only: bool = False, **kwargs) -> list[dict]:
    """Sample with tags; `unique`/`new_only`/`constraints` keep drawing until n qualify (or give up)."""
    chunks = sample_chunks(predictor, vocab, n, seed, splits=splits, unique=unique, new_only=new_only, **kwargs)
    return [{"text": w, "tag": t} for words, tags in chunks for w, t in zip(words, tags)]


@torch.no_grad()
def score(predictor: Predictor, vocab: Vocab, words: list[str], top: int = 0) -> list[dict]:
    """Each word's NLL under the model: total, per character (end token counted), perplexity.
    With `top` > 0, each position also lists the `top` most likely next characters (what the
    model expected instead), from the same forward pass. A word is normalised as the model's
    data was read (NFC, by default) and scored symbol by symbol (characters, or grapheme
    clusters); "word" is the text scored."""
    check_unlabelled(predictor)
    check_vocab(predictor, vocab)
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0:
        raise UserError(f"top must be a whole number, 0 or more, got {top!r}")
    if isinstance(words, str):  # a string is a sequence of one-letter words
        raise UserError(f"score takes a list of words, got the string {words!r}: give [{words!r}]")
    if not all(isinstance(w, str) for w in words):
        raise UserError("score takes a list of words: every one a string")
    words = [vocab.normalized(w) for w in words]
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
        symbols = [*vocab.symbols(w), vocab.boundary]
        k = len(symbols)
        lp = target_logp[i:i + k]
        nll = float(-lp.sum())
        chars = [{"char": shown(c), "prob": float(p)} for c, p in zip(symbols, lp.exp().tolist())]
        if top > 0:
            for j, entry in enumerate(chars):
                entry["top"] = [{"char": shown(vocab.chars[ix]), "prob": p}
                                for ix, p in zip(top_ix[i + j], top_p[i + j])]
        results.append({"word": w, "nll": nll, "nll_per_char": nll / k, "perplexity": math.exp(nll / k),
                        "chars": chars})
        i += k
    return results
