"""Using a trained run: `makemore eval`, `sample`, `score` and `serve`."""

from __future__ import annotations

import json
import sys

from ..errors import UserError
from .common import (EXIT_INTERRUPTED, _at_least_one, _at_least_zero, _load, _positive_float, _predictor, _print_json,
                     _subparser, add_use_flags, columns, pad)


def _which(run, use: str) -> str:
    """Which predictor `use` ("result", "model", "mixture") is for this run."""
    from ..mixture import result_of
    from ..rundir import read_mixture

    if use != "result":
        return use
    fitted = read_mixture(run.path)
    return "model" if fitted is None else fitted.get("result") or result_of(fitted)


def add_eval(sub) -> None:
    p = _subparser(sub, "eval", "mean NLL and perplexity of a trained model over a whole split",
                   "makemore eval runs/lecture --split dev")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--split", choices=("train", "dev", "test"), default="dev",
                   help="the test split is only touched when named")
    add_use_flags(p, "evaluate")
    p.add_argument("--json", action="store_true")


def cmd_eval(args) -> int:
    import math

    from ..data import Examples
    from ..predict import model_predictor, split_nll
    from ..runs import Ensemble

    run = _load(args.run, ensemble=True)
    examples = Examples.from_words(run.splits[args.split], run.vocab)
    progress = None if not args.json else False
    predictor = _predictor(run, args.use)
    loss = split_nll(predictor, examples, progress=progress, desc=f"{args.split} loss")
    members = None
    if isinstance(run, Ensemble):
        members = [{"run": r.path.name, "loss": split_nll(model_predictor(r.model), examples, progress=progress)}
                   for r in run.runs]
    result = {"split": args.split, "loss": loss, "perplexity": math.exp(loss), "examples": len(examples)}
    if run.vocab.labels:  # the loss above is given each item's own label; and which label would Bayes pick?
        from ..labels import accuracy, label_prior

        result["accuracy"] = accuracy(predictor, run.vocab, label_prior(run.vocab, run.splits["train"]),
                                      run.splits[args.split])
        result["labels"] = len(run.vocab.labels)
    which = _which(run, args.use)
    # what was scored, the same keys whichever: the neural model, the mixture, or the count model
    result["predictor"] = which
    result["mix"] = which == "mixture"
    if members is not None:
        result["members"] = members
    if args.json:
        _print_json(result)
        return 0
    if members is not None:
        weights = run.info.get("weights")
        mean = ("the weighted mean of their probabilities (weights " + ", ".join(f"{w:.2f}" for w in weights) + ")"
                if weights and len(set(weights)) > 1 else "the mean of their probabilities")
    what = f", ensemble of {len(members)}: {mean}" if members is not None else ""
    what += {"mixture": ", mixed with its n-gram model", "ngram": ", its count model (the run's result)",
             "model": ""}[which]
    print(f"{args.split} loss {loss:.4f}  perplexity {math.exp(loss):.3f}  ({len(examples):,} examples{what})")
    if "accuracy" in result:
        print(f"{args.split} labels: loss given each item's label; classified by Bayes' rule: accuracy "
              f"{result['accuracy']:.4f} ({len(run.splits[args.split]):,} items, {len(run.vocab.labels)} labels)")
    for m in members or []:
        print(f"  {m['run']:<12} loss {m['loss']:.4f}")
    return 0


def add_sample(sub) -> None:
    p = _subparser(sub, "sample", "generate new words from a trained model",
                   "makemore sample runs/lecture -n 20 --seed 1 --new-only\n"
                   "  makemore sample runs/lecture -n 20 --min-len 5 --max-len 8 --suffix a --exclude taken.txt\n"
                   "  makemore sample runs/lecture -n 100000000 | head    # streamed: starts at once, stops quietly")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-n", type=_at_least_one, default=20,
                   help="how many samples (default 20); written a chunk at a time as they are drawn, in "
                        "bounded memory however large n is")
    p.add_argument("--seed", type=int, default=None,
                   help="fixes the samples: the same seed, model and flags give the same words, and a smaller "
                        "-n the first lines of a larger one, but for rare float-rounding ties (default: random)")
    p.add_argument("--temperature", type=_positive_float, default=1.0,
                   help="divide the log-probabilities by this: < 1 sharper, > 1 flatter (default 1)")
    p.add_argument("--top-k", type=_at_least_one, default=None, help="draw only among the k likeliest characters")
    p.add_argument("--prefix", default="", help="start every sample with these characters")
    p.add_argument("--label", default=None,
                   help="a labelled run (--labels): samples of this label (default: labels drawn by their share of "
                        "the training split, each sample written LABEL<TAB>ITEM)")
    p.add_argument("--unique", action="store_true",
                   help="no repeated samples (remembers every sample written: memory grows with -n)")
    cond = p.add_argument_group(
        "conditions", "every sample meets them all, and the samples follow the model's distribution conditioned\n"
        "on them (by rejection: samples that fail are drawn and left out); lengths count the prefix\n"
        "(docs/api.md)")
    cond.add_argument("--suffix", default="", help="end every sample with these characters")
    cond.add_argument("--contains", default="", help="only samples that contain these characters")
    cond.add_argument("--min-len", type=_at_least_zero, default=1, metavar="N",
                      help="only samples of N characters or more (default 1: no empty ones; 0 keeps them)")
    cond.add_argument("--max-len", type=_at_least_zero, default=None, metavar="N",
                      help="only samples of N characters or fewer (a sample is dropped as soon as it grows past N); "
                           "without it, a sample is cut after 64 characters past the prefix, and a note says how "
                           "many were")
    cond.add_argument("--exclude", metavar="FILE", default=None,
                      help="leave out the words of FILE (one per line), as --new-only leaves out the data's; for a "
                           "labelled run, a line LABEL<TAB>ITEM (as sample writes them) leaves ITEM out under LABEL, "
                           "a bare ITEM under every label")
    cond.add_argument("--new-only", action="store_true", help="only words in none of the splits")
    add_use_flags(p, "sample from")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: sampling is many small steps, and on a busy machine torch's "
                        "thread pool cost more than it gave; 0: torch's default)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help='one JSON array of {"text", "tag"} objects, tag train/dev/test/new (written as it goes)')
    out.add_argument("--jsonl", action="store_true", help="JSON Lines: one such object per line")
    out.add_argument("--tags", action="store_true",
                     help="each word, a tab and its tag: train, dev, test (a word of that split) or new")


class _StopAtChunk:
    """Ctrl-C (SIGINT) while sampling: note it, so the loop stops between two chunks and the
    output ends on a whole line (and a closed JSON array). A second Ctrl-C stops at once."""

    def __enter__(self):
        import signal
        import threading

        self.requested, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def cmd_sample(args) -> int:
    from ..runtime import check_threads, using_threads

    check_threads(args.threads)
    with using_threads(args.threads):
        written, stopped, cut = _write_samples(args)  # a closed pipe or a full disk: main says so
    if cut and not stopped:  # Ctrl-C's one line stays the only one
        from ..sampling import MAX_LEN

        print(f"note: {cut:,} sample{'s' if cut != 1 else ''} reached the cap of {MAX_LEN} characters past the "
              f"prefix and {'were' if cut != 1 else 'was'} cut there, not ended by the model: give --max-len N "
              f"for samples of up to N characters (longer ones are then left out)", file=sys.stderr)
    if stopped:
        print(f"makemore: interrupted after {written:,} samples", file=sys.stderr)
        return EXIT_INTERRUPTED
    if written < args.n:
        print(f"note: only {written:,} sample{'s' if written != 1 else ''} met the conditions before new ones "
              f"became too rare to find the rest", file=sys.stderr)
    return 0


def _write_all(out, text: str) -> None:
    """Write text to `out` in full and flush it. Under `python -u` or PYTHONUNBUFFERED, stdout
    has no buffer, and a write that Ctrl-C interrupts while the pipe is full writes only part
    of its bytes, which TextIOWrapper then drops: the output would end inside a line. So the
    bytes go to the binary layer in a loop until all are written."""
    binary = getattr(out, "buffer", None)
    if binary is None:  # a plain text stream (an embedding application's)
        out.write(text)
        out.flush()
        return
    out.flush()
    data = memoryview(text.encode(out.encoding or "utf-8", out.errors or "strict"))
    while data:
        data = data[binary.write(data) or 0:]
    binary.flush()


def _write_samples(args) -> tuple[int, bool, int]:
    """Draw and write the samples a chunk at a time: (how many were written, stopped by Ctrl-C,
    how many of them were cut at the cap: without --max-len, a sample of MAX_LEN characters past
    the prefix, which no sample that ended has; see sampling._Sampler.draw_rows)."""
    from ..data import read_words
    from ..conditions import Constraints
    from ..sampling import MAX_LEN, sample_chunks

    exclude = read_words(args.exclude, allow_empty=True) if args.exclude is not None else ()  # none yet: none left out
    run = _load(args.run, ensemble=True)
    tagged = args.json or args.jsonl or args.tags or args.new_only
    constraints = Constraints(suffix=args.suffix, contains=args.contains, min_len=args.min_len,
                              max_len=args.max_len, exclude=exclude)
    predictor, vocab, splits = _for_label(run, _predictor(run, args.use), args.label)
    if args.label is not None:  # an excluded line LABEL<TAB>ITEM of this label is its ITEM; of another, nothing
        from ..labels import label_constraints

        constraints = label_constraints(constraints, run.vocab, args.label)
    settings = dict(unique=args.unique, new_only=args.new_only, temperature=args.temperature, top_k=args.top_k,
                    prefix=args.prefix, constraints=constraints)
    if vocab.labels:  # no label asked for: drawn by the training split's shares
        from ..labels import sample_labels

        chunks = sample_labels(predictor, vocab, splits, args.n, seed=args.seed, tagged=tagged, **settings)
    else:
        chunks = sample_chunks(predictor, vocab, args.n, seed=args.seed, splits=splits if tagged else None,
                               **settings)
    cut_at = None if args.max_len is not None else vocab.length(vocab.normalized(args.prefix)) + MAX_LEN
    encode = json.JSONEncoder(ensure_ascii=False).encode
    out, written, cut = sys.stdout, 0, 0
    with _StopAtChunk() as stop:
        try:
            for words, tags in chunks:
                if stop.requested:
                    break
                if not words:
                    continue
                if args.json or args.jsonl:
                    lines = [f'{{"text": {encode(w)}, "tag": "{t}"}}' for w, t in zip(words, tags)]
                    if args.json:
                        text = ("[\n" if written == 0 else ",\n") + ",\n".join(lines)
                    else:
                        text = "\n".join(lines) + "\n"
                elif args.tags:
                    text = "".join(f"{w}\t{t}\n" for w, t in zip(words, tags))
                else:
                    text = "\n".join(words) + "\n"
                _write_all(out, text)  # and flushed: each chunk is seen as soon as it is drawn
                written += len(words)
                if cut_at is not None:
                    cut += int((vocab.lengths(words) >= cut_at).sum())
        except UserError:  # conditions found hopeless on the way: what was written stays whole
            if args.json and written:
                _write_all(out, "\n]\n")
            raise
        if args.json:
            _write_all(out, "\n]\n" if written else "[]\n")  # closed on Ctrl-C too: the output stays valid JSON
    return written, stop.requested, cut


def add_score(sub) -> None:
    p = _subparser(sub, "score", "how plausible each word is under the model",
                   "makemore score runs/lecture emma xqzzt --verbose")
    p.add_argument("run", metavar="RUN")
    p.add_argument("words", nargs="+", metavar="WORD")
    p.add_argument("--verbose", action="store_true", help="per-character probabilities")
    p.add_argument("--label", default=None, help="a labelled run (--labels): score the words as items of this label")
    add_use_flags(p, "score with")
    p.add_argument("--json", action="store_true")


def cmd_score(args) -> int:
    from ..sampling import score

    run = _load(args.run, ensemble=True)
    predictor, vocab, _ = _for_label(run, _predictor(run, args.use), args.label)
    if vocab.labels:
        raise UserError(f"{args.run} was trained on labelled data: give --label (one of {', '.join(vocab.labels)}), "
                        f"or ask which label a word belongs to with `makemore classify {args.run} WORD`")
    results = score(predictor, vocab, args.words)
    if not args.verbose:
        for r in results:
            del r["chars"]
    if args.json:
        _print_json(results)
        return 0
    width = max(len("word"), *(columns(r["word"]) for r in results))
    print(f"{pad('word', width)}  {'nll':>8}  {'nll/char':>8}  {'perplexity':>10}")
    for r in results:
        print(f"{pad(r['word'], width)}  {r['nll']:8.3f}  {r['nll_per_char']:8.3f}  {r['perplexity']:10.3f}")
        if args.verbose:
            print("    " + "  ".join(f"{c['char']}:{c['prob']:.3f}" for c in r["chars"]))
    return 0


def _for_label(run, predictor, label: str | None):
    """(predictor, vocabulary, splits) to sample or score with: a labelled run's given `label`
    (labels.one_label), else the run's own; a label for an unlabelled run is one error line."""
    if label is None:
        return predictor, run.vocab, run.splits
    if not run.vocab.labels:
        raise UserError(f"{run.path} was trained without labels: --label needs a run trained with --labels")
    from ..labels import one_label

    return one_label(predictor, run.vocab, run.splits, label)


def add_classify(sub) -> None:
    p = _subparser(sub, "classify", "which label (list) each word belongs to, by Bayes' rule (a run trained with --labels)",
                   "makemore classify runs/languages hello bonjour --json\n"
                   "  makemore classify runs/languages --file words.txt")
    p.add_argument("run", metavar="RUN")
    p.add_argument("words", nargs="*", metavar="WORD")
    p.add_argument("--file", metavar="F", default=None, help="classify the words of F too (one per line)")
    p.add_argument("--top", type=_at_least_one, default=3, help="labels shown per word (default 3; --json lists all)")
    add_use_flags(p, "classify with")
    p.add_argument("--json", action="store_true",
                   help='[{"word", "labels": [{"label", "prob"}, ...] most likely first}, ...] in the order given')


def cmd_classify(args) -> int:
    from ..data import read_words
    from ..labels import classify, label_prior

    words = list(args.words) + (read_words(args.file) if args.file is not None else [])
    if not words:
        raise UserError("give words to classify, or --file F")
    run = _load(args.run, ensemble=True)
    if not run.vocab.labels:
        raise UserError(f"{args.run} was trained without labels: classify needs a run trained with --labels")
    try:
        results = classify(_predictor(run, args.use), run.vocab, label_prior(run.vocab, run.splits["train"]), words)
    except UserError:
        _locate_unreadable(run.vocab, words, args)
        raise
    if args.json:
        _print_json(results)
        return 0
    width = max(columns(r["word"]) for r in results)
    for r in results:
        shown = "  ".join(f"{x['label']} {x['prob']:.3f}" for x in r["labels"][:args.top])
        print(f"{pad(r['word'], width)}  {shown}")
    return 0


def _locate_unreadable(vocab, words: list[str], args) -> None:
    """After classify refused a word: which one, and where (in a file of thousands, its line)."""
    from ..labels import check_items
    from ..vocab import LABEL_SEP

    for i, word in enumerate(words):
        try:
            check_items(vocab, [word])
        except UserError as e:
            where = f"word {i + 1} of the command line" if i < len(args.words) else _line_of(args.file, word)
            hint = "; --file takes one word per line, without a label" if LABEL_SEP in word else ""
            raise UserError(f"{where}: {e}{hint}") from None


def _line_of(path: str, word: str) -> str:
    """Where in the file `word` is, for an error about it: read again, since the words read
    have lost their blank lines (and so their line numbers)."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        number = next((n for n, line in enumerate(f, 1) if line.strip() == word), None)
    return f"line {number:,} of {path}" if number is not None else f"a word of {path}"


def add_serve(sub) -> None:
    p = _subparser(sub, "serve", "a local web page over trained runs: sample, explain a name, embeddings, "
                   "training curves; and its JSON API (see docs/serve.md)",
                   "makemore serve runs/lecture runs/ensemble --port 8000")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run or ensemble directories; the first opens")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the "
                        "server to the network: see docs/serve.md first)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    add_use_flags(p, "serve")


def cmd_serve(args) -> int:
    from ..serve import serve

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    serve(args.runs, host=args.host, port=args.port, use=args.use)
    return 0
