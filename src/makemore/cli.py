"""The `makemore` command: a thin layer of argument parsing over the Python API.

Each subcommand is a pair: `add_<name>(subparsers)` declares its flags and an example,
`cmd_<name>(args)` calls the API and prints. Errors a user can cause (UserError) become one
line on stderr and exit status 1; argparse's own errors are one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .config import DEVICES, ENGINES, OPTIMIZERS, PRESETS, SCHEDULES, make_configs
from .errors import UserError

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, as every other error here."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def _subparser(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


# ----------------------------------------------------------------------------------------
# shared flags

MODEL_FLAGS = {  # flag -> (config field, type, help)
    "--block-size": ("block_size", int, "characters of context"),
    "--emb-dim": ("emb_dim", int, "embedding size per character"),
    "--hidden": ("hidden", int, "units per tanh hidden layer"),
    "--layers": ("layers", int, "number of tanh hidden layers"),
    "--dropout": ("dropout", float, "dropout on hidden outputs while training"),
    "--init": ("init", str, "randn (the lecture) or scaled"),
    "--batch-size": ("batch_size", int, "examples per minibatch"),
    "--steps": ("steps", int, "training steps (minibatch updates)"),
    "--lr": ("lr", float, "peak learning rate"),
    "--optimizer": ("optimizer", str, "|".join(OPTIMIZERS)),
    "--schedule": ("schedule", str, "|".join(SCHEDULES)),
    "--weight-decay": ("weight_decay", float, "weight decay on C and weight matrices"),
    "--warmup": ("warmup", int, "linear warm-up steps (cosine schedule)"),
    "--decay-rate": ("decay_rate", float, "r in lr/(1+r*t) (inverse schedule)"),
    "--seed": ("seed", int, "seed for weights and minibatches"),
    "--eval-interval": ("eval_interval", int, "steps between dev evaluations (0: 20 per run)"),
    "--engine": ("engine", str, "|".join(ENGINES)),
    "--device": ("device", str, "|".join(DEVICES) + " (default cpu)"),
    "--threads": ("threads", int, "torch threads (0: torch's default)"),
}


def add_data_flags(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, help="text file with one item per line, or `names`")
    p.add_argument("--split-seed", type=int, default=42, help="seed of the 80/10/10 split (default 42)")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help=f"named settings: {', '.join(PRESETS)} (default: default)")
    for flag, (dest, typ, help) in MODEL_FLAGS.items():
        p.add_argument(flag, dest=dest, type=typ, default=None, help=help)
    p.add_argument("--direct", action="store_true", default=None, help="Bengio's direct embedding->output links")


def configs_from_args(args, vocab_size: int, **extra):
    overrides = {dest: getattr(args, dest, None) for dest, _, _ in MODEL_FLAGS.values()}
    overrides["direct"] = getattr(args, "direct", None)
    return make_configs(args.preset, vocab_size=vocab_size, **{**overrides, **extra})


# ----------------------------------------------------------------------------------------
# makemore data


def add_data(sub) -> None:
    p = _subparser(sub, "data", "describe a data file: words, vocabulary, split sizes",
                   "makemore data --data names --block-size 3")
    p.add_argument("--data", required=True, help="text file with one item per line, or `names`")
    p.add_argument("--block-size", type=int, default=3)
    p.add_argument("--seed", type=int, default=42, help="seed of the 80/10/10 split")
    p.add_argument("--json", action="store_true")


def cmd_data(args) -> int:
    from .data import load_corpus

    if args.block_size < 1:
        raise UserError(f"block-size must be at least 1, got {args.block_size}")
    stats = load_corpus(args.data, seed=args.seed).stats(args.block_size)
    if args.json:
        _print_json(stats)
        return 0
    print(f"source        {stats['source']}")
    print(f"words         {stats['words']:,} ({stats['distinct_words']:,} distinct, {stats['duplicates']:,} duplicates)")
    print(f"vocabulary    {stats['vocab_size']} characters: {stats['vocab']!r} (boundary token {stats['boundary']!r} at index 0)")
    print(f"longest word  {stats['longest_word']!r} ({stats['longest_length']} characters)")
    sw, ex = stats["split_words"], stats["examples"]
    print(f"split (seed {stats['seed']})  train {sw['train']:,} / dev {sw['dev']:,} / test {sw['test']:,} words")
    print(f"examples (block {stats['block_size']})  train {ex['train']:,} / dev {ex['dev']:,} / test {ex['test']:,}")
    return 0


# ----------------------------------------------------------------------------------------
# makemore train


def add_train(sub) -> None:
    p = _subparser(sub, "train", "train an MLP language model into a run directory",
                   "makemore train --data names --preset lecture --out runs/lecture\n"
                   "  makemore train --resume runs/lecture")
    add_data_flags(p, required=False)
    add_model_flags(p)
    p.add_argument("--out", help="run directory to create (must not exist)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _print_summary(summary: dict, run_dir) -> None:
    print(f"parameters  {summary['params']:,}")
    print(f"steps       {summary['steps']:,} ({summary['engine']} engine, {summary['device']}, "
          f"{summary['seconds']:.1f} s)")
    print(f"train loss  {summary['train_loss']:.4f}")
    print(f"dev loss    {summary['dev_loss']:.4f}  (best checkpoint, step {summary['best_step']:,})")
    if run_dir is not None:
        print(f"run         {run_dir}")


def cmd_train(args) -> int:
    from .data import load_corpus
    from .train import resume, train

    progress = False if args.quiet else None
    if args.resume:
        if args.out or args.data:
            raise UserError("--resume RUN continues RUN as it was configured; drop --out/--data")
        result = resume(args.resume, steps=args.steps, progress=progress)
    else:
        if not args.data:
            raise UserError("--data is required (a text file with one item per line, or `names`)")
        if not args.out:
            raise UserError("--out RUN is required: the run directory to create")
        out = Path(args.out)
        if out.exists():
            raise UserError(f"{out} already exists; pick another --out, or continue it with --resume {out}")
        corpus = load_corpus(args.data, seed=args.split_seed)
        model_cfg, train_cfg = configs_from_args(args, corpus.vocab.size)
        if corpus.vocab.boundary != ".":
            print(f"note: the data uses '.', so the boundary token is {corpus.vocab.boundary!r}", file=sys.stderr)
        try:
            result = train(corpus, model_cfg, train_cfg, out=out, progress=progress)
        except BaseException:
            # a run that never reached its first checkpoint is of no use: leave nothing behind
            if out.exists() and not (out / "best.safetensors").exists():
                shutil.rmtree(out, ignore_errors=True)
            raise
    _print_summary(result.summary, result.run_dir)
    if result.status == "interrupted":
        print(result.message, file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.status == "diverged":
        print(f"makemore: error: {result.message}", file=sys.stderr)
        return EXIT_ERROR
    return 0


# ----------------------------------------------------------------------------------------
# makemore eval / sample / score


def _load(run: str):
    from .runs import load_run

    return load_run(run)


def _predictor(run, mix: bool):
    """The run's MLP, or with --mix its fitted mixture with the n-gram model (RUN/mix.json)."""
    from .sample import mlp_predictor

    mlp = mlp_predictor(run.model)
    if not mix:
        return mlp
    from .ngram import mixture_from_settings

    path = run.path / "mix.json"
    if not path.is_file():
        raise UserError(f"{run.path} has no fitted mixture; run `makemore mix {run.path} --ngram-context 5` first")
    try:
        settings = json.loads(path.read_text())
        return mixture_from_settings(mlp, run.splits["train"], run.vocab, settings)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"{path} is corrupted; fit it again with `makemore mix {run.path}`") from None


def add_eval(sub) -> None:
    p = _subparser(sub, "eval", "mean NLL and perplexity of a trained model over a whole split",
                   "makemore eval runs/lecture --split dev")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--split", choices=("train", "dev", "test"), default="dev",
                   help="the test split is only touched when named")
    p.add_argument("--json", action="store_true")


def cmd_eval(args) -> int:
    import math

    from .data import build_examples
    from .model import mean_nll

    run = _load(args.run)
    X, Y = build_examples(run.splits[args.split], run.vocab, run.model_cfg.block_size)
    loss = mean_nll(run.model, X, Y)
    result = {"split": args.split, "loss": loss, "perplexity": math.exp(loss), "examples": int(X.shape[0])}
    if args.json:
        _print_json(result)
    else:
        print(f"{args.split} loss {loss:.4f}  perplexity {math.exp(loss):.3f}  ({X.shape[0]:,} examples)")
    return 0


def add_sample(sub) -> None:
    p = _subparser(sub, "sample", "generate new words from a trained model",
                   "makemore sample runs/lecture -n 20 --seed 1 --new-only")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-n", type=int, default=20, help="how many samples")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--prefix", default="", help="start every sample with these characters")
    p.add_argument("--unique", action="store_true", help="no repeated samples")
    p.add_argument("--new-only", action="store_true", help="only words in none of the splits")
    p.add_argument("--mix", action="store_true", help="sample from the MLP + n-gram mixture (see `mix`)")
    p.add_argument("--json", action="store_true")


def cmd_sample(args) -> int:
    from .sample import sample_tagged

    run = _load(args.run)
    samples = sample_tagged(_predictor(run, args.mix), run.vocab, run.splits, args.n, seed=args.seed, unique=args.unique, new_only=args.new_only,
                            temperature=args.temperature, top_k=args.top_k, prefix=args.prefix)
    if len(samples) < args.n:
        print(f"note: only {len(samples)} samples met the conditions after many draws", file=sys.stderr)
    if args.json:
        _print_json(samples)
    else:
        for s in samples:
            print(s["text"])
    return 0


def add_score(sub) -> None:
    p = _subparser(sub, "score", "how plausible each word is under the model",
                   "makemore score runs/lecture emma xqzzt --verbose")
    p.add_argument("run", metavar="RUN")
    p.add_argument("words", nargs="+", metavar="WORD")
    p.add_argument("--verbose", action="store_true", help="per-character probabilities")
    p.add_argument("--mix", action="store_true", help="score with the MLP + n-gram mixture (see `mix`)")
    p.add_argument("--json", action="store_true")


def cmd_score(args) -> int:
    from .sample import score

    run = _load(args.run)
    results = score(_predictor(run, args.mix), run.vocab, args.words)
    if not args.verbose:
        for r in results:
            del r["chars"]
    if args.json:
        _print_json(results)
        return 0
    width = max(len(r["word"]) for r in results)
    print(f"{'word':<{width}}  {'nll':>8}  {'nll/char':>8}  {'perplexity':>10}")
    for r in results:
        print(f"{r['word']:<{width}}  {r['nll']:8.3f}  {r['nll_per_char']:8.3f}  {r['perplexity']:10.3f}")
        if args.verbose:
            print("    " + "  ".join(f"{c['char']}:{c['prob']:.3f}" for c in r["chars"]))
    return 0


# ----------------------------------------------------------------------------------------
# makemore ngram / mix: the count baselines, and Bengio's mixture of the MLP with one


def add_ngram(sub) -> None:
    p = _subparser(sub, "ngram", "count baselines (add-alpha, Kneser-Ney) for context lengths 1..K",
                   "makemore ngram --data names --max-context 6 --compare runs/lecture")
    add_data_flags(p)
    p.add_argument("--max-context", type=int, default=6, help="largest context length K")
    p.add_argument("--compare", metavar="RUN", help="show this MLP run's size and dev NLL beside them")
    p.add_argument("--json", action="store_true")


def cmd_ngram(args) -> int:
    from .data import load_corpus
    from .ngram import ngram_table

    if not 1 <= args.max_context <= 12:
        raise UserError(f"max-context must be between 1 and 12, got {args.max_context}")
    corpus = load_corpus(args.data, seed=args.split_seed)
    compare = None
    if args.compare:
        from .data import build_examples
        from .model import mean_nll

        run = _load(args.compare)
        if run.splits["dev"] != corpus.splits["dev"]:
            raise UserError(f"{args.compare} was trained on another data file or split; its dev NLL would not compare")
        X, Y = build_examples(run.splits["dev"], run.vocab, run.model_cfg.block_size)
        compare = {"run": args.compare, "params": run.model.num_params(),
                   "block_size": run.model_cfg.block_size, "dev_loss": mean_nll(run.model, X, Y)}
    rows = ngram_table(corpus, args.max_context)
    if args.json:
        _print_json(rows if compare is None else {"ngram": rows, "mlp": compare})
        return 0
    print(f"{'context':>7}  {'table entries':>16}  {'unseen dev ctx':>14}  {'add-alpha':>9} {'(alpha)':>8}  "
          f"{'Kneser-Ney':>10} {'(D)':>6}")
    for r in rows:
        print(f"{r['context']:>7}  {r['table_entries']:>16,}  {r['unseen_dev_contexts']:>14.1%}  "
              f"{r['add_alpha']['dev_loss']:>9.4f} {r['add_alpha']['alpha']:>8.3f}  "
              f"{r['kneser_ney']['dev_loss']:>10.4f} {r['kneser_ney']['discount']:>6.3f}")
    if compare:
        print(f"MLP {compare['run']}: {compare['params']:,} parameters (block {compare['block_size']}), "
              f"dev {compare['dev_loss']:.4f}")
    print("dev NLL in nats per character on the dev split; smoothing tuned on dev")
    return 0


def add_mix(sub) -> None:
    p = _subparser(sub, "mix", "mix the MLP with a Kneser-Ney model (Bengio et al. 2003, sec. 4), weight tuned on dev",
                   "makemore mix runs/lecture --ngram-context 5\n  makemore sample runs/lecture --mix")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--ngram-context", type=int, default=5, help="context length of the n-gram model")
    p.add_argument("--json", action="store_true")


def cmd_mix(args) -> int:
    from .ngram import fit_mixture
    from .sample import mlp_predictor
    from .utils import atomic_write_json

    if not 1 <= args.ngram_context <= 12:
        raise UserError(f"ngram-context must be between 1 and 12, got {args.ngram_context}")
    run = _load(args.run)
    _, result = fit_mixture(mlp_predictor(run.model), run.splits["train"], run.splits["dev"], run.vocab,
                            args.ngram_context)
    atomic_write_json(run.path / "mix.json", result)
    if args.json:
        _print_json(result)
        return 0
    print(f"MLP dev loss          {result['mlp_dev_loss']:.4f}")
    print(f"Kneser-Ney (k={args.ngram_context}) dev  {result['ngram_dev_loss']:.4f}  (discount {result['discount']:.3f})")
    print(f"mixture dev loss      {result['mix_dev_loss']:.4f}  (weight on the MLP {result['weight']:.3f})")
    print(f"saved to {run.path / 'mix.json'}; use it with `sample --mix` and `score --mix`")
    return 0


# ----------------------------------------------------------------------------------------

# name -> (declare flags, run); the help lists them in this order
COMMANDS = {
    "data": (add_data, cmd_data),
    "train": (add_train, cmd_train),
    "eval": (add_eval, cmd_eval),
    "sample": (add_sample, cmd_sample),
    "score": (add_score, cmd_score),
    "ngram": (add_ngram, cmd_ngram),
    "mix": (add_mix, cmd_mix),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="makemore", description="Character-level MLP language model (Bengio et al. 2003, "
                    "makemore part 2): train on a file of words, then sample and score.",
                    epilog="example:\n  makemore train --data names --preset lecture --out runs/lecture\n"
                    "  makemore sample runs/lecture -n 10", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command][1](args)
    except UserError as e:
        print(f"makemore: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("makemore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
