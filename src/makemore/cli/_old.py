"""The `makemore` command: a thin layer of argument parsing over the Python API.

Each subcommand is a pair: `add_<name>(subparsers)` declares its flags and an example,
`cmd_<name>(args)` calls the API and prints. Errors a user can cause (UserError) become one
line on stderr and exit status 1; argparse's own errors are one line and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from .errors import UserError

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


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
# shared flags: one per config field (config.TrainConfig, and every model's config in models/)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _duration(text: str) -> float:
    """argparse type of a duration flag: 90, 2m, 1h, 1m30s -> seconds."""
    from .budget import parse_seconds

    try:
        return parse_seconds(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_field_flag(group, name: str, f, help: str) -> None:
    default = f.default
    if isinstance(default, bool):
        group.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=help)
        return
    kind = type(default) if isinstance(default, (int, float, str)) else str
    metavar = {int: "N", float: "X", str: "NAME"}[kind]
    if f.metadata.get("parse") is not None:  # --budget 2m: a duration
        kind, metavar = _duration, "TEXT"
    group.add_argument(_flag(name), dest=name, type=kind, default=None, metavar=metavar, help=help)


def setting_flags() -> dict[str, list[str]]:
    """Every model setting's field name -> the models that have it, in registry order."""
    from . import models

    owners: dict[str, list[str]] = {}
    for model in models.REGISTRY:
        for name in models.config_fields(model):
            owners.setdefault(name, []).append(model)
    return owners


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model, --preset, and a flag for every setting: training ones, then the models' own."""
    from . import models
    from .config import PRESETS, TRAIN_FIELDS

    p.add_argument("--model", default=None, choices=models.REGISTRY, metavar="NAME",
                   help=f"which model: {', '.join(models.REGISTRY)} (default: the preset's, else mlp)")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help=f"named recipe: {', '.join(PRESETS)} (default: the model's own recipe; for mlp, default)")
    train = p.add_argument_group("training settings (any model)")
    for name, f in TRAIN_FIELDS.items():
        if name != "betas":
            _add_field_flag(train, name, f, f.metadata.get("help", ""))
    group = p.add_argument_group("model settings (each applies to the models named after it)")
    for name, owners in setting_flags().items():
        f = models.config_fields(owners[0])[name]
        where = "every model" if len(owners) == len(models.REGISTRY) else ", ".join(owners)
        _add_field_flag(group, name, f, f"{f.metadata.get('help', '')} [{where}]")


def configs_from_args(args, vocab_size: int, **extra):
    from .config import TRAIN_FIELDS, make_configs

    names = [n for n in TRAIN_FIELDS if n != "betas"] + list(setting_flags())
    overrides = {n: getattr(args, n, None) for n in names}
    return make_configs(getattr(args, "preset", None), getattr(args, "model", None), vocab_size=vocab_size,
                        **{**overrides, **extra})


def add_data_flags(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, help="text file with one item per line, or `names`")
    p.add_argument("--split-seed", type=int, default=42, help="seed of the 80/10/10 split (default 42)")
    p.add_argument("--min-char-count", type=int, default=1, metavar="K",
                   help="characters seen fewer than K times in the training split become one "
                        "unknown-character token (default 1: keep every character)")


def _load_corpus(args):
    from .data import load_corpus

    return load_corpus(args.data, seed=args.split_seed, min_char_count=args.min_char_count)


# ----------------------------------------------------------------------------------------
# makemore data

VOCAB_SHOWN = 120  # a vocabulary up to this size is printed whole; larger ones are summarised


def add_data(sub) -> None:
    p = _subparser(sub, "data", "describe a data file: words, vocabulary, split sizes",
                   "makemore data --data names --block-size 3\n  makemore data --data big.txt --min-char-count 5")
    add_data_flags(p)
    p.add_argument("--block-size", type=int, default=3)
    p.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)  # older spelling of --split-seed
    p.add_argument("--json", action="store_true", help="everything, the whole vocabulary and character counts included")


def cmd_data(args) -> int:
    if args.block_size < 1:
        raise UserError(f"block-size must be at least 1, got {args.block_size}")
    if args.seed is not None:
        args.split_seed = args.seed
    stats = _load_corpus(args).stats(args.block_size)
    if args.json:
        _print_json(stats)
        return 0
    print(f"source        {stats['source']}")
    print(f"words         {stats['words']:,} ({stats['distinct_words']:,} distinct, {stats['duplicates']:,} duplicates)")
    print(f"characters    {stats['chars']:,} in all, {stats['distinct_chars']:,} distinct")
    if stats["vocab_size"] <= VOCAB_SHOWN:
        print(f"vocabulary    {stats['vocab_size']} characters: {stats['vocab']!r} (boundary token "
              f"{stats['boundary']!r} at index 0{_unk_note(stats)})")
    else:
        counts = stats["char_counts_train"]
        common = "".join(list(counts)[:40])
        rare = sum(1 for n in counts.values() if n < 5)
        print(f"vocabulary    {stats['vocab_size']:,} characters (boundary token {stats['boundary']!r} at index 0"
              f"{_unk_note(stats)}); `--json` lists them all")
        print(f"  most common {common!r}")
        print(f"  rare        {rare:,} characters are seen fewer than 5 times in the training split")
        scripts = stats["scripts"]
        shown = list(scripts.items())[:12]
        print("  by script   " + ", ".join(f"{k} {v['chars']:,} ({v['count'] / stats['chars']:.1%})" for k, v in shown)
              + (f", {len(scripts) - len(shown)} more" if len(scripts) > len(shown) else ""))
    if stats["min_char_count"] > 1:
        print(f"rare chars    --min-char-count {stats['min_char_count']}: {stats['folded_chars']:,} characters, "
              f"{stats['folded_share']:.3%} of the text, are read as the unknown token {stats['unk']!r}")
    print(f"longest word  {stats['longest_word']!r} ({stats['longest_length']} characters)")
    sw, ex = stats["split_words"], stats["examples"]
    print(f"split (seed {stats['seed']})  train {sw['train']:,} / dev {sw['dev']:,} / test {sw['test']:,} words")
    print(f"examples (block {stats['block_size']})  train {ex['train']:,} / dev {ex['dev']:,} / test {ex['test']:,}")
    return 0


def _unk_note(stats: dict) -> str:
    return f"; unknown-character token {stats['unk']!r} at index 1" if stats.get("unk") else ""


# ----------------------------------------------------------------------------------------
# makemore train


def add_train(sub) -> None:
    p = _subparser(sub, "train", "train a language model (the MLP unless --model says otherwise) into a run directory",
                   "makemore train --data names --preset lecture --out runs/lecture\n"
                   "  makemore train --data names --model gru --out runs/gru\n"
                   "  makemore train --data names --preset lecture --seeds 5 --out runs/ensemble\n"
                   "  makemore train --resume runs/lecture")
    add_data_flags(p, required=False)
    add_model_flags(p)
    p.add_argument("--out", help="run directory to create (must not exist)")
    p.add_argument("--seeds", type=int, default=1, metavar="K",
                   help="train K seeds (--seed, --seed+1, ...) together, into OUT/seed-<s>/: "
                        "a seed ensemble, which eval, sample and score average (default 1)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-mix", action="store_true",
                   help="with --budget and no --preset: train the model alone, without the Kneser-Ney model a "
                        "budget run otherwise counts and mixes it with (--mix)")
    p.add_argument("--from-study", metavar="NAME", help="the best configuration of `makemore tune` study NAME "
                   "(flags given still override)")
    p.add_argument("--storage", metavar="URL", help="where the study is (default: sqlite:///runs/tune/study.db)")
    dp = p.add_argument_group("data-parallel training (torch.distributed, gloo; or run this command under torchrun)")
    dp.add_argument("--nproc", type=int, default=None, metavar="N",
                    help="start N worker processes on this machine, each taking 1/N of every minibatch "
                         "(--threads sets each one's BLAS threads; default: cores / N)")
    dp.add_argument("--nnodes", type=int, default=None, metavar="M",
                    help="with --nproc: M machines, each running this same command (needs --rdzv-endpoint)")
    dp.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                    help="where the machines' launchers meet (one of the machines, a free port)")
    dp.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                    help="give up on a worker that does not answer within this many seconds (default 120)")


def _print_summary(summary: dict, run_dir) -> None:
    print(f"model       {summary.get('model', 'mlp')}, {summary['params']:,} parameters")
    print(f"steps       {summary['steps']:,} ({summary['engine']} engine, {summary['device']}, "
          f"{summary['seconds']:.1f} s)")
    estimate = summary.get("train_loss_examples")
    print(f"train loss  {summary['train_loss']:.4f}" + (f"  (on {estimate:,} training examples)" if estimate else ""))
    subset = summary.get("final_examples") and summary.get("dev_loss_examples")
    print(f"dev loss    {summary['dev_loss']:.4f}  (best checkpoint, step {summary['best_step']:,}"
          + (f"; on {subset:,} dev examples" if subset else "") + ")")
    if summary.get("mix") and run_dir is not None:
        _print_mixture(summary["mix"], run_dir)
    if run_dir is not None:
        print(f"run         {run_dir}")


def _exit_status(results) -> int:
    """130 after Ctrl-C, 143 after SIGTERM (128 + the signal), 1 if a run diverged, else 0."""
    interrupted = [r for r in results if r.status == "interrupted"]
    if interrupted:
        return EXIT_TERMINATED if interrupted[0].signal == "SIGTERM" else EXIT_INTERRUPTED
    return EXIT_ERROR if any(r.status == "diverged" for r in results) else 0


def cmd_train(args) -> int:
    """A run here, or (--nproc/--nnodes) the workers of a data-parallel run; a worker started by
    torchrun or by --nproc joins its process group around the run (distributed.py)."""
    from . import distributed

    if distributed.launches(args):
        return distributed.launch(args)
    with distributed.worker(args.dist_timeout, args.threads):
        return _cmd_train(args)


def _cmd_train(args) -> int:
    from .distributed import is_writer, world
    from .recipes import attach_mixture
    from .training import resume, train

    progress = False if args.quiet else None
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.resume:
        if args.out or args.data or args.from_study or args.seeds > 1:
            raise UserError("--resume RUN continues RUN as it was configured; drop --out/--data/--from-study/--seeds")
        result = resume(args.resume, steps=args.steps, progress=progress)
    else:
        _apply_study(args)
        if not args.data:
            raise UserError("--data is required (a text file with one item per line, or `names`)")
        if not args.out:
            raise UserError("--out RUN is required: the run directory to create")
        out = Path(args.out)
        if out.exists() and is_writer():  # checked again, atomically, when the run creates it
            raise UserError(f"{out} already exists; pick another --out, or continue it with --resume {out}")
        corpus = _load_corpus(args)
        extra, counted = None, None
        if args.budget and not args.preset and not args.from_study:
            model_cfg, train_cfg, recipe = _budget_recipe(args, corpus)
            extra = {"recipe": recipe} if recipe else None
            if recipe and not args.no_mix and world() is None:
                train_cfg, counted, extra = _count_for_mixture(corpus, train_cfg, extra)
        else:
            model_cfg, train_cfg = configs_from_args(args, corpus.vocab.size)
        if corpus.vocab.boundary != "." and is_writer():
            print(f"note: the data uses '.', so the boundary token is {corpus.vocab.boundary!r}", file=sys.stderr)
        if args.seeds > 1:
            if world() is not None:
                raise UserError("--seeds K is not supported with several workers yet; train the seeds as separate runs")
            status = _train_ensemble(corpus, model_cfg, train_cfg, args.seeds, out, progress, extra)
            if counted and status == 0:
                _print_mixture(attach_mixture(out, *counted), out)
            return status
        result = train(corpus, model_cfg, train_cfg, out=out, progress=progress, extra_summary=extra)
        if counted and result.status == "completed" and result.run_dir is not None:
            result.summary["mix"] = attach_mixture(result.run_dir, *counted)
    _print_summary(result.summary, result.run_dir)
    if result.status == "interrupted" and is_writer():
        print(result.message, file=sys.stderr)
    if result.status == "diverged" and is_writer():
        print(f"makemore: error: {result.message}", file=sys.stderr)
    return _exit_status([result])


def _budget_recipe(args, corpus):
    """`train --budget S` with no --preset: the best recipe known for S seconds (recipes.py),
    flags given still override."""
    from .config import TRAIN_FIELDS
    from .recipes import budget_configs

    names = [n for n in TRAIN_FIELDS if n not in ("betas", "budget")] + list(setting_flags())
    model_cfg, train_cfg, recipe = budget_configs(args.budget, corpus.vocab.size, len(corpus.encoded("train")),
                                                  args.model, **{n: getattr(args, n, None) for n in names})
    if recipe is None:
        print(f"note: no time-budget recipe is known for --model {model_cfg.name}: its own preset, with the steps "
              f"planned for {args.budget:g} s", file=sys.stderr)
        return model_cfg, train_cfg, None
    print(f"note: the recipe for {recipe['budget']:g} s (--model {recipe['model']}: dev {recipe['dev_loss']:.4f} on "
          f"{recipe.get('data', 'names')} in {recipe['budget']:g} s on {recipe.get('machine') or 'the tuning machine'}, "
          f"{recipe.get('date') or 'undated'}); steps planned for {args.budget:g} s here", file=sys.stderr)
    return model_cfg, train_cfg, recipe


def _count_for_mixture(corpus, train_cfg, extra):
    """A budget run's Kneser-Ney model (recipes.count_for_mixture), counted before training and
    its time taken out of the budget; none when it would take too much of it."""
    from .recipes import MIX_CONTEXT, count_for_mixture

    counted = count_for_mixture(corpus, train_cfg.budget)
    if counted is None:
        print(f"note: counting a Kneser-Ney model of {MIX_CONTEXT} characters would take more than a tenth of "
              f"{train_cfg.budget:g} s on this data: the model is trained alone", file=sys.stderr)
        return train_cfg, None, extra
    extra = {**(extra or {}), "budget_requested": train_cfg.budget}
    return replace(train_cfg, budget=train_cfg.budget - counted[1]), counted, extra


def _print_mixture(mix: dict, run_dir) -> None:
    print(f"mixture     dev {mix['mix_dev_loss']:.4f}  with Kneser-Ney of {mix['ngram_context']} characters "
          f"(dev {mix['ngram_dev_loss']:.4f}, counted in {mix['count_seconds']:.2f} s), weight {mix['weight']:.3f} "
          f"on the model; eval, sample, score and serve it with --mix ({Path(run_dir) / 'mix.json'})")


def _train_ensemble(corpus, model_cfg, train_cfg, seeds: int, out: Path, progress, extra=None) -> int:
    from .training import train_ensemble

    ens = train_ensemble(corpus, model_cfg, train_cfg, seeds, out, progress=progress, extra_summary=extra)
    first = ens.results[0].summary
    print(f"model       {first.get('model', 'mlp')}, {first['params']:,} parameters per member")
    print(f"steps       {first['steps']:,}; {len(ens.results)} seeds trained together ({first['engine']} engine, "
          f"{first['device']}, {first['seconds']:.1f} s)")
    for seed, r in zip(ens.seeds, ens.results):
        print(f"  seed {seed:<6} train {r.summary['train_loss']:.4f}  dev {r.summary['dev_loss']:.4f}  "
              f"(best step {r.summary['best_step']:,}, {r.status})")
    print(f"dev loss    {ens.dev_loss:.4f}  (the ensemble: mean of the {len(ens.members)} members' probabilities)")
    print(f"run         {out}")
    statuses = {r.status for r in ens.results}
    diverged = [r for r in ens.results if r.status == "diverged"]
    if diverged:
        print(f"makemore: error: {len(diverged)} of {len(ens.results)} seeds diverged; {diverged[0].run_dir.name}: "
              f"{diverged[0].message}", file=sys.stderr)
    if "interrupted" in statuses:
        print(f"interrupted; each member's progress is saved and resumes on its own "
              f"(makemore train --resume {out}/seed-<s>)", file=sys.stderr)
    return _exit_status(ens.results)


# ----------------------------------------------------------------------------------------
# makemore eval / sample / score


def _load(run: str, ensemble: bool = False):
    """RUN as a Run; with `ensemble`, a seed ensemble directory as an Ensemble too."""
    from .runs import load_any, load_run

    return load_any(run) if ensemble else load_run(run)


def _predictor(run, mix: bool):
    from .predict import run_predictor

    return run_predictor(run, mix)


def add_eval(sub) -> None:
    p = _subparser(sub, "eval", "mean NLL and perplexity of a trained model over a whole split",
                   "makemore eval runs/lecture --split dev")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--split", choices=("train", "dev", "test"), default="dev",
                   help="the test split is only touched when named")
    p.add_argument("--mix", action="store_true", help="evaluate the model + n-gram mixture (see `mix`)")
    p.add_argument("--json", action="store_true")


def cmd_eval(args) -> int:
    import math

    from .data import Examples
    from .predict import model_predictor, split_nll
    from .runs import Ensemble

    run = _load(args.run, ensemble=True)
    examples = Examples.from_words(run.splits[args.split], run.vocab)
    progress = None if not args.json else False
    loss = split_nll(_predictor(run, mix=args.mix), examples, progress=progress, desc=f"{args.split} loss")
    members = None
    if isinstance(run, Ensemble):
        members = [{"run": r.path.name, "loss": split_nll(model_predictor(r.model), examples, progress=progress)}
                   for r in run.runs]
    result = {"split": args.split, "loss": loss, "perplexity": math.exp(loss), "examples": len(examples)}
    if args.mix:
        result["mix"] = True
    if members is not None:
        result["members"] = members
    if args.json:
        _print_json(result)
        return 0
    what = f", ensemble of {len(members)}: mean of their probabilities" if members is not None else ""
    what += ", mixed with its n-gram model" if args.mix else ""
    print(f"{args.split} loss {loss:.4f}  perplexity {math.exp(loss):.3f}  ({len(examples):,} examples{what})")
    for m in members or []:
        print(f"  {m['run']:<12} loss {m['loss']:.4f}")
    return 0


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_sample(sub) -> None:
    p = _subparser(sub, "sample", "generate new words from a trained model",
                   "makemore sample runs/lecture -n 20 --seed 1 --new-only\n"
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
    p.add_argument("--unique", action="store_true",
                   help="no repeated samples (remembers every sample written: memory grows with -n)")
    p.add_argument("--new-only", action="store_true", help="only words in none of the splits")
    p.add_argument("--mix", action="store_true", help="sample from the model + n-gram mixture (see `mix`)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: sampling is many small steps, and on a busy machine torch's "
                        "thread pool cost more than it gave; 0: torch's default)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help='one JSON array of {"text", "tag"} objects, tag train/dev/test/new (written as it goes)')
    out.add_argument("--jsonl", action="store_true", help="JSON Lines: one such object per line")


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


def _quiet_stdout() -> None:
    """After the reader closed the pipe (`| head`): point stdout at /dev/null, so that the
    interpreter's last flush at exit does not fail again with a message on stderr."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def cmd_sample(args) -> int:
    import torch

    if args.threads < 0:
        raise UserError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        written, stopped = _write_samples(args)
    except BrokenPipeError:  # the reader has what it wanted (`| head`)
        _quiet_stdout()
        return 0
    finally:
        torch.set_num_threads(threads)
    if stopped:
        print(f"makemore: interrupted after {written:,} samples", file=sys.stderr)
        return EXIT_INTERRUPTED
    if written < args.n:
        print(f"note: only {written:,} samples met the conditions before the model stopped giving new ones",
              file=sys.stderr)
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


def _write_samples(args) -> tuple[int, bool]:
    """Draw and write the samples a chunk at a time: (how many were written, stopped by Ctrl-C)."""
    from .sampling import sample_chunks

    run = _load(args.run, ensemble=True)
    tagged = args.json or args.jsonl or args.new_only
    chunks = sample_chunks(_predictor(run, args.mix), run.vocab, args.n, seed=args.seed,
                           splits=run.splits if tagged else None, unique=args.unique, new_only=args.new_only,
                           temperature=args.temperature, top_k=args.top_k, prefix=args.prefix)
    encode = json.JSONEncoder(ensure_ascii=False).encode
    out, written = sys.stdout, 0
    with _StopAtChunk() as stop:
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
            else:
                text = "\n".join(words) + "\n"
            _write_all(out, text)  # and flushed: each chunk is seen as soon as it is drawn
            written += len(words)
        if args.json:
            _write_all(out, "\n]\n" if written else "[]\n")  # closed on Ctrl-C too: the output stays valid JSON
    return written, stop.requested


def add_score(sub) -> None:
    p = _subparser(sub, "score", "how plausible each word is under the model",
                   "makemore score runs/lecture emma xqzzt --verbose")
    p.add_argument("run", metavar="RUN")
    p.add_argument("words", nargs="+", metavar="WORD")
    p.add_argument("--verbose", action="store_true", help="per-character probabilities")
    p.add_argument("--mix", action="store_true", help="score with the model + n-gram mixture (see `mix`)")
    p.add_argument("--json", action="store_true")


def cmd_score(args) -> int:
    from .sampling import score

    run = _load(args.run, ensemble=True)
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
    p.add_argument("--compare", metavar="RUN", help="show this run's size and dev NLL beside them")
    p.add_argument("--test", action="store_true", help="also the test NLL of each dev-tuned model (read the "
                   "test split once, for final figures)")
    p.add_argument("--json", action="store_true")


def cmd_ngram(args) -> int:
    from .ngram import ngram_table

    if not 1 <= args.max_context <= 12:
        raise UserError(f"max-context must be between 1 and 12, got {args.max_context}")
    corpus = _load_corpus(args)
    compare = None
    if args.compare:
        from .data import Examples
        from .predict import model_predictor, split_nll

        run = _load(args.compare)
        if run.splits["dev"] != corpus.splits["dev"]:
            raise UserError(f"{args.compare} was trained on another data file or split; its dev NLL would not compare")
        dev = Examples.from_words(run.splits["dev"], run.vocab)
        compare = {"run": args.compare, "model": run.model_cfg.name, "params": run.model.num_params(),
                   "block_size": run.model_cfg.block_size, "dev_loss": split_nll(model_predictor(run.model), dev)}
    try:
        rows = ngram_table(corpus, args.max_context, test=args.test)
    except MemoryError:  # NGramCounts checks its bound beforehand; this is for what that misses
        raise UserError(f"out of memory counting contexts of up to {args.max_context} characters; "
                        f"use a smaller --max-context") from None
    if args.json:
        _print_json(rows if compare is None else {"ngram": rows, "mlp": compare})
        return 0
    print(f"{'context':>7}  {'table entries':>16}  {'unseen dev ctx':>14}  {'add-alpha':>9} {'(alpha)':>8}  "
          f"{'Kneser-Ney':>10} {'(D)':>6}")
    for r in rows:
        entries = r["table_entries"]  # V^(k+1), a Python int: 3.2e+25 for V = 4,400 and k = 6
        entries = f"{entries:,}" if entries < 10**12 else f"{float(entries):.1e}"
        alpha = r["add_alpha"]["alpha"]  # 0.06 to 0.4 on names, 1e-4 to 1e-3 on a list of thousands of characters
        alpha = f"{alpha:.3f}" if alpha >= 0.01 else f"{alpha:.1e}"
        print(f"{r['context']:>7}  {entries:>16}  {r['unseen_dev_contexts']:>14.1%}  "
              f"{r['add_alpha']['dev_loss']:>9.4f} {alpha:>8}  "
              f"{r['kneser_ney']['dev_loss']:>10.4f} {r['kneser_ney']['discount']:>6.3f}"
              + (f"  test {r['add_alpha']['test_loss']:.4f} / {r['kneser_ney']['test_loss']:.4f}" if args.test else ""))
    if compare:
        print(f"{compare['model']} {compare['run']}: {compare['params']:,} parameters (block {compare['block_size']}), "
              f"dev {compare['dev_loss']:.4f}")
    print("dev NLL in nats per character on the dev split; smoothing tuned on dev")
    return 0


def add_ensemble(sub) -> None:
    p = _subparser(sub, "ensemble", "one model from several trained runs (any models, same data): the mean of "
                   "their probabilities", "makemore ensemble runs/default runs/wavenet runs/gru --out runs/ens\n"
                   "  makemore mix runs/ens --ngram-context 5")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories trained on the same data and split")
    p.add_argument("--out", required=True, help="the ensemble directory to create (the runs are copied into it)")
    p.add_argument("--equal", action="store_true", help="weight every member 1/K (default: the weights that "
                   "maximise the dev likelihood, fitted by EM)")
    p.add_argument("--json", action="store_true")


def cmd_ensemble(args) -> int:
    import torch

    from .data import Examples
    from .predict import ensemble_predictor, fit_ensemble_weights, model_predictor, split_nll, target_log_probs
    from .runs import combine_runs, write_ensemble

    ens = combine_runs(args.out, args.runs)
    dev = Examples.from_words(ens.splits["dev"], ens.vocab)
    progress = False if args.json else None
    logp = torch.stack([target_log_probs(model_predictor(m), dev, progress=progress, desc=f"dev loss of {r.path.name}")
                         for r, m in zip(ens.runs, ens.models)])
    names = [r.path.name for r in ens.runs]
    members = {name: -logp[k].mean().item() for k, name in enumerate(names)}
    weights = [1.0 / len(names)] * len(names) if args.equal else fit_ensemble_weights(logp)
    dev_loss = split_nll(ensemble_predictor(ens.models, weights), dev, progress=progress, desc="dev loss")
    write_ensemble(ens.path, names, {**ens.info, "weights": weights, "weights_from": "equal" if args.equal else "dev",
                                     "member_dev_loss": members, "dev_loss": dev_loss})
    if args.json:
        _print_json({"out": str(ens.path), "member_dev_loss": members, "weights": dict(zip(names, weights)),
                     "dev_loss": dev_loss})
        return 0
    for (name, loss), w in zip(members.items(), weights):
        print(f"{name:<24} dev loss {loss:.4f}  weight {w:.3f}")
    how = "equal weights" if args.equal else "weights fitted on dev"
    print(f"{'ensemble':<24} dev loss {dev_loss:.4f}  (mixture of the {len(members)} members' probabilities, {how})")
    print(f"saved to {ens.path}; eval, sample, score, mix and serve take it as one run")
    return 0


def add_mix(sub) -> None:
    p = _subparser(sub, "mix", "mix a trained model with a Kneser-Ney model (Bengio et al. 2003, sec. 4), weight tuned on dev",
                   "makemore mix runs/lecture --ngram-context 5\n  makemore sample runs/lecture --mix")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--ngram-context", type=int, default=5, help="context length of the n-gram model")
    p.add_argument("--json", action="store_true")


def cmd_mix(args) -> int:
    from .ngram import fit_mixture
    from .runs import save_mixture

    if not 1 <= args.ngram_context <= 12:
        raise UserError(f"ngram-context must be between 1 and 12, got {args.ngram_context}")
    run = _load(args.run, ensemble=True)
    try:
        _, result = fit_mixture(_predictor(run, mix=False), run.splits["train"], run.splits["dev"], run.vocab,
                                args.ngram_context)
    except MemoryError:
        raise UserError(f"out of memory counting contexts of {args.ngram_context} characters; "
                        f"use a smaller --ngram-context") from None
    save_mixture(run.path, result)
    if args.json:
        _print_json(result)
        return 0
    print(f"model dev loss        {result['mlp_dev_loss']:.4f}")
    print(f"Kneser-Ney (k={args.ngram_context}) dev  {result['ngram_dev_loss']:.4f}  (discount {result['discount']:.3f})")
    print(f"mixture dev loss      {result['mix_dev_loss']:.4f}  (weight on the model {result['weight']:.3f})")
    print(f"saved to {run.path / 'mix.json'}; use it with `sample --mix` and `score --mix`")
    return 0


# ----------------------------------------------------------------------------------------
# makemore tune: hyperparameter search with Optuna, one study shared by any number of workers


def add_tune(sub) -> None:
    from . import models
    from .tune import DEFAULT_HEARTBEAT, DEFAULT_OUT, DEFAULT_STEPS, DEFAULT_STUDY

    p = _subparser(sub, "tune", "search hyperparameters (Optuna); start the same command on many "
                   "machines with a shared --storage to work on one study",
                   "makemore tune --data names --trials 40 --steps 5000\n"
                   "  makemore tune --data names --trials 200 --storage postgresql://user@dbhost/makemore\n"
                   "  makemore tune --data names --model gru --budget 5m --trials 20 --study gru --out runs/tune-gru\n"
                   "  makemore tune --report\n"
                   "  makemore train --from-study makemore --out runs/best")
    add_data_flags(p, required=False)
    p.add_argument("--trials", type=int, help="trials the study should finish, counted over all workers")
    p.add_argument("--timeout", type=float, help="seconds after which this worker starts no new trial")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"most training steps of a trial (searched from a fifth of it; default {DEFAULT_STEPS})")
    p.add_argument("--study", default=DEFAULT_STUDY, help=f"study name (default {DEFAULT_STUDY})")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default sqlite:///OUT/study.db); "
                   "postgresql://... for workers on several machines")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder of the trials' run directories and plots "
                   f"(default {DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=42, help="training seed of every trial; seeds the sampler")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial (default 1: one worker per core)")
    p.add_argument("--heartbeat", type=int, default=DEFAULT_HEARTBEAT,
                   help=f"seconds between a running trial's heartbeats; a trial silent for 3 of them is "
                   f"failed and re-run (default {DEFAULT_HEARTBEAT})")
    p.add_argument("--space", metavar="JSON", help="narrow or widen the search ranges, as JSON or a JSON file: "
                   "'{\"hidden\": [32, 256], \"layers\": 1, \"direct\": [false]}' (see the README, \"Hyperparameter search\")")
    p.add_argument("--budget", type=_duration, metavar="TEXT",
                   help="a time objective: each trial trains for this long (90, 2m, 1h; its steps planned from its "
                        "speed) and the study seeks the best dev loss reached in it; --steps is then not searched")
    p.add_argument("--try", dest="tries", metavar="PRESETS", default="",
                   help="comma-separated presets whose settings are the study's first trials (e.g. fast,default; "
                        "with --budget, `recipe` is the recipe `train --budget` takes now)")
    p.add_argument("--model", default=models.DEFAULT_MODEL, choices=models.REGISTRY, metavar="NAME",
                   help=f"whose settings are searched: {', '.join(models.REGISTRY)} (default {models.DEFAULT_MODEL}; "
                        f"the space is SEARCH_SPACE in models/NAME.py)")
    p.add_argument("--report", action="store_true", help="show the study's best trials and draw its plots; trains nothing")
    p.add_argument("--top", type=int, default=10, help="trials in the table (default 10)")
    p.add_argument("--json", action="store_true")


def cmd_tune(args) -> int:
    import os

    if args.top < 1:
        raise UserError(f"top must be at least 1, got {args.top}")
    if args.report:
        if args.data or args.trials is not None:
            raise UserError("--report reads an existing study; drop --data/--trials")
        from .tune import default_storage, load_study, print_summary, summary, write_plots

        url = args.storage or default_storage(args.out)
        study = load_study(args.study, url)
        result = summary(study, args.top, url)
        result["plots"] = write_plots(study, Path(args.out))
        if args.json:
            _print_json(result)
            return 0
        print_summary(result)
        for name, path in result["plots"]["written"].items():
            print(f"plot        {path}")
        for name, note in result["plots"]["skipped"].items():
            print(f"plot        {name} {note}")
        return 0
    if not args.data:
        raise UserError("--data is required (a text file with one item per line, or `names`)")
    if args.trials is None:
        raise UserError("--trials N is required: how many trials the study should finish")
    if args.threads > 0:  # before torch and NumPy start their thread pools
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(args.threads))
    from .tune import TuneOptions, default_storage, parse_space, print_summary, run_study, summary

    opts = TuneOptions(model=args.model, trials=args.trials, out=Path(args.out), study=args.study, storage=args.storage,
                       steps=args.steps, timeout=args.timeout, seed=args.seed, threads=args.threads,
                       heartbeat=args.heartbeat, space=parse_space(args.space), budget=args.budget,
                       tries=tuple(t for t in args.tries.split(",") if t))
    opts.validate()
    corpus = _load_corpus(args)
    study, _ = run_study(corpus, args.data, opts)
    result = summary(study, args.top, args.storage or default_storage(args.out))
    if args.json:
        _print_json(result)
    else:
        print_summary(result)
    return 0


def _apply_study(args) -> None:
    """`train --from-study NAME`: the study's best settings fill every flag not given."""
    if not args.from_study:
        if args.storage:
            raise UserError("--storage is read with --from-study NAME only")
        return
    from .tune import DEFAULT_OUT, best_settings, default_storage

    best = best_settings(args.from_study, args.storage or default_storage(DEFAULT_OUT))
    for field, value in best["settings"].items():
        if getattr(args, field, None) is None:
            setattr(args, field, value)
    if not args.data:
        args.data = best["data"]
    if args.split_seed == 42:
        args.split_seed = best["split_seed"]
    print(f"note: settings of trial {best['trial']} of study {args.from_study!r} (dev {best['dev_loss']:.4f})",
          file=sys.stderr)


# ----------------------------------------------------------------------------------------
# makemore lr-find / sweep / plot / embeddings: experiments and their pictures


def _settings_line(model_cfg, train_cfg) -> str:
    from dataclasses import asdict

    if model_cfg.name == "mlp":
        shape = (f"block {model_cfg.block_size}, emb {model_cfg.emb_dim}, hidden {model_cfg.hidden}"
                 f"{f' x{model_cfg.layers}' if model_cfg.layers > 1 else ''}, init {model_cfg.init}")
    else:
        shape = f"{model_cfg.name}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in asdict(model_cfg).items()
                                                  if k != "vocab_size")
    return f"{shape}; {train_cfg.optimizer}, batch {train_cfg.batch_size}"


def add_lr_find(sub) -> None:
    p = _subparser(sub, "lr-find", "learning-rate range test (makemore part 2): one minibatch step at each of "
                   "--steps rates rising exponentially from --lr-min to --lr-max; writes lr_find.png and lr_find.csv",
                   "makemore lr-find --data names --preset lecture --out runs/lr-find")
    add_data_flags(p)
    add_model_flags(p)
    p.set_defaults(steps=1000)
    for action in p._actions:
        if action.dest == "steps":
            action.help = "rates tried, one minibatch step each (default 1000)"
    p.add_argument("--lr-min", type=float, default=1e-3, help="first learning rate (default 1e-3)")
    p.add_argument("--lr-max", type=float, default=1.0, help="last learning rate (default 1)")
    p.add_argument("--divide-by", type=float, default=None,
                   help="suggest the rate at the smoothed curve's minimum divided by this (default 2)")
    p.add_argument("--seeds", type=int, default=1, metavar="K",
                   help="run K seeds side by side (one batched step where that pays) and average their curves (default 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for lr_find.png and lr_find.csv")
    p.add_argument("--json", action="store_true", help="print the suggestion as JSON")


def cmd_lr_find(args) -> int:
    import csv

    from .experiments import LR_FIND_FIELDS, SUGGEST_DIVISOR, lr_find
    from .plots import plot_lr_find
    from .utils import atomic_write

    if args.lr is not None:
        raise UserError("lr-find sweeps the learning rate itself; give the range with --lr-min/--lr-max, not --lr")
    corpus = _load_corpus(args)
    model_cfg, train_cfg = configs_from_args(args, corpus.vocab.size)
    divisor = SUGGEST_DIVISOR if args.divide_by is None else args.divide_by
    result = lr_find(corpus, model_cfg, train_cfg, args.lr_min, args.lr_max, args.steps, divisor=divisor,
                     seeds=args.seeds)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=LR_FIND_FIELDS)
            writer.writeheader()
            for row in result.rows:
                writer.writerow({k: "" if row[k] is None else row[k] for k in LR_FIND_FIELDS})

    csv_path, png_path = out / "lr_find.csv", out / "lr_find.png"
    atomic_write(csv_path, write_csv)
    data_name = Path(corpus.source).name
    plot_lr_find(result.rows, result.suggested_lr, png_path,
                 f"Learning-rate range test on {data_name}: {args.steps:,} steps, "
                 f"{args.preset or 'default'} preset" + (f", mean of {args.seeds} seeds" if args.seeds > 1 else ""),
                 f"{_settings_line(model_cfg, train_cfg)}; suggested lr {result.suggested_lr:.3g} = "
                 f"lr at the minimum / {divisor:g}")
    report = {"suggested_lr": result.suggested_lr, "rule": result.rule, "lr_at_min": result.lr_at_min,
              "min_smoothed_loss": result.min_smoothed_loss, "diverged_at_step": result.diverged_at,
              "smoothing_window": result.window, "seconds": round(result.seconds, 3), "engine": result.engine,
              "csv": str(csv_path), "png": str(png_path)}
    if args.json:
        _print_json(report)
        return 0
    print(f"suggested lr  {result.suggested_lr:.3g}")
    print(f"rule          {result.rule}")
    print(f"smoothing     centred moving average over {result.window} steps")
    if result.diverged_at is not None:
        print(f"diverged      at step {result.diverged_at} (lr {result.rows[result.diverged_at]['lr']:.3g}); "
              f"no steps after it")
    print(f"time          {result.seconds:.1f} s ({result.engine} engine)")
    print(f"wrote         {csv_path} ({len(result.rows)} rows)")
    print(f"wrote         {png_path}")
    return 0


def add_sweep(sub) -> None:
    p = _subparser(sub, "sweep", "train every combination of a grid of settings, each as a run in DIR/<name>/; "
                   "tabulate them by dev loss (sweep.csv, sweep.json, sweep.png); a rerun skips finished ones",
                   'makemore sweep --data names --preset lecture --steps 3000 '
                   '--grid "emb_dim=2,10 hidden=100,200" --out runs/sweep')
    add_data_flags(p)
    add_model_flags(p)
    p.add_argument("--grid", required=True,
                   help='settings to combine, KEY=V1,V2 separated by spaces, e.g. "emb_dim=2,10,24 hidden=100,200"; '
                        "keys are any model/training setting (dashes or underscores)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the sweep's runs and table")
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def cmd_sweep(args) -> int:
    from .experiments import parse_grid, sweep, table_fields
    from .plots import plot_sweep

    from .config import TRAIN_FIELDS, preset_model

    model = args.model or (preset_model(args.preset) if args.preset else "mlp")
    grid = parse_grid(args.grid, model)
    corpus = _load_corpus(args)
    overrides = {n: getattr(args, n, None) for n in [n for n in TRAIN_FIELDS if n != "betas"] + list(setting_flags())}

    def on_result(i: int, n: int, name: str, row: dict, reused: bool) -> None:
        how = "finished earlier, skipped" if reused else f"{row['seconds']:.1f} s"
        print(f"[{i + 1}/{n}] {name}: dev {row['dev_loss']:.4f}  train {row['train_loss']:.4f}  "
              f"{row['params']:,} params  ({how})", file=sys.stderr, flush=True)

    result = sweep(corpus, grid, args.out, preset=args.preset, model=args.model, overrides=overrides,
                   on_result=on_result)
    out = Path(args.out)
    steps = sorted({r["steps"] for r in result.table})
    steps_text = f"{steps[0]:,} steps" if len(steps) == 1 else "steps " + "/".join(f"{s:,}" for s in steps)
    png = plot_sweep(result.table, grid, out / "sweep.png",
                     f"Sweep on {Path(corpus.source).name}: {len(result.table)} configurations, {steps_text} each "
                     f"({args.preset or 'default'} preset)")
    if args.json:
        _print_json(result.table)
    else:
        columns = table_fields(grid)
        widths = {c: max(len(c), *(len(_cell(r[c], c)) for r in result.table)) for c in columns}
        print("  ".join(f"{c:<{widths[c]}}" if c in ("name", "status") else f"{c:>{widths[c]}}"
                        for c in columns).rstrip())
        for r in result.table:
            print("  ".join(f"{_cell(r[c], c):<{widths[c]}}" if c in ("name", "status") else f"{_cell(r[c], c):>{widths[c]}}"
                            for c in columns).rstrip())
        print(f"sorted by dev loss; gap = dev - train; trained {len(result.trained)}, "
              f"skipped {len(result.reused)} finished earlier")
    for path in (out / "sweep.csv", out / "sweep.json", png):
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _cell(value, column: str = "") -> str:
    if column == "seconds":
        return f"{value:,.1f}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def add_plot(sub) -> None:
    p = _subparser(sub, "plot", "draw a run's training and dev loss and its learning rate against steps: RUN/loss.png",
                   "makemore plot runs/lecture")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--out", metavar="PNG", help="where to write the picture (default RUN/loss.png)")


def cmd_plot(args) -> int:
    from .config import configs_from_dict
    from .models import count_params
    from .plots import plot_loss, read_metrics
    from .runs import read_run_config

    run = Path(args.run)
    config = read_run_config(run)
    model_cfg, train_cfg = configs_from_dict(config)
    metrics = read_metrics(run / "metrics.csv")
    summary_path = run / "summary.json"
    status = ""
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        status = f"; {summary.get('status', '?')} after {summary.get('steps', 0):,} steps, {summary.get('seconds', 0):.0f} s"
    else:
        status = "; still training (no summary.json yet)"
    png = plot_loss(metrics, Path(args.out) if args.out else run / "loss.png",
                    f"{run.resolve().name}: loss during training ({count_params(model_cfg):,} parameters)",
                    f"{_settings_line(model_cfg, train_cfg)}, {train_cfg.schedule} schedule from lr {train_cfg.lr:g}{status}")
    print(f"wrote {png}")
    return 0


def add_embeddings(sub) -> None:
    p = _subparser(sub, "embeddings", "draw a run's character embeddings C (PCA to 2-D when wider): "
                   "RUN/embeddings.png; print each character's nearest neighbours",
                   "makemore embeddings runs/tiny2d")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--neighbours", type=int, default=3, help="nearest neighbours to print per character (default 3)")
    p.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean",
                   help="distance for the neighbours, in the full embedding space (default euclidean)")
    p.add_argument("--out", metavar="PNG", help="where to write the picture (default RUN/embeddings.png)")
    p.add_argument("--json", action="store_true")


def cmd_embeddings(args) -> int:
    from .experiments import embedding_projection, nearest_neighbours
    from .plots import plot_embeddings

    if args.neighbours < 1:
        raise UserError(f"--neighbours must be at least 1, got {args.neighbours}")
    run = _load(args.run)
    table = run.model.embedding_table()
    if table is None:
        raise UserError(f"--model {run.model_cfg.name} has no table of character embeddings to draw")
    C = table.detach().cpu().double().numpy()
    chars = run.vocab.chars
    dim = C.shape[1]
    xy, share, shares = embedding_projection(C)
    name = run.path.resolve().name
    if dim == 2:
        title = f"{name}: the 2-D character embeddings C"
        labels = ("C[:, 0]", "C[:, 1]")
    elif dim == 1:
        title = f"{name}: the 1-D character embeddings C (drawn on a line)"
        labels = ("C[:, 0]", "")
    else:
        title = f"{name}: {dim}-D embeddings C by PCA; the two axes keep {share:.0%} of the variance"
        labels = (f"principal component 1 ({shares[0]:.0%} of the variance)",
                  f"principal component 2 ({shares[1]:.0%} of the variance)")
    png = plot_embeddings(xy, chars, Path(args.out) if args.out else run.path / "embeddings.png", title, *labels,
                          subtitle=f"{run.model.num_params():,} parameters; close characters are interchangeable "
                                   "to the network")
    neighbours = nearest_neighbours(C, args.neighbours, args.metric)
    unit = "1 - cosine similarity" if args.metric == "cosine" else "euclidean distance"
    if args.json:
        _print_json({"png": str(png), "emb_dim": dim, "variance_share": share, "metric": args.metric,
                     "neighbours": {chars[i]: [[chars[j], d] for j, d in nn] for i, nn in enumerate(neighbours)}})
        return 0
    print(f"wrote {png}")
    if dim > 2:
        print(f"PCA: the two axes keep {share:.1%} of the variance of the {dim}-D embeddings "
              f"({shares[0]:.1%} + {shares[1]:.1%})")
    print(f"nearest neighbours ({unit} in the full {dim}-D embedding space; '{run.vocab.boundary}' is the boundary token):")
    for i, nn in enumerate(neighbours):
        print(f"  {chars[i]}  " + "  ".join(f"{chars[j]} {d:.3f}" for j, d in nn))
    return 0


# ----------------------------------------------------------------------------------------
# makemore serve: a web page and JSON API over trained runs (serve.py)


def add_serve(sub) -> None:
    p = _subparser(sub, "serve", "a local web page over trained runs: sample, explain a name, embeddings, "
                   "training curves; and its JSON API (see the README)",
                   "makemore serve runs/lecture runs/ensemble --port 8000")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run or seed-ensemble directories; the first opens")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the "
                        "server to the network: see the README first)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--mix", action="store_true", help="serve each RUN's model + n-gram mixture (see `mix`)")


def cmd_serve(args) -> int:
    from .serve import serve

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    serve(args.runs, host=args.host, port=args.port, mix=args.mix)
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
    "ensemble": (add_ensemble, cmd_ensemble),
    "tune": (add_tune, cmd_tune),
    "lr-find": (add_lr_find, cmd_lr_find),
    "sweep": (add_sweep, cmd_sweep),
    "plot": (add_plot, cmd_plot),
    "embeddings": (add_embeddings, cmd_embeddings),
    "serve": (add_serve, cmd_serve),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="makemore", description="Character-level language models: the MLP of Bengio et al. 2003 "
                    "(makemore part 2) and makemore's other models (--model); train on a file of words, then "
                    "sample and score.",
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
