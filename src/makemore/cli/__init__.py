"""The `makemore` command: a thin layer of argument parsing over the Python API.

Each subcommand is a pair: `add_<name>(subparsers)` declares its flags and an example,
`cmd_<name>(args)` calls the API and prints; one module per family of commands. Errors a user
can cause (UserError) become one line on stderr and exit status 1; argparse's own errors are one
line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from ..outputs import os_error
from .combine import add_ensemble, add_mix, cmd_ensemble, cmd_mix
from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, Parser, _quiet_stdout
from .data import add_data, add_ngram, cmd_data, cmd_ngram
from .experiments import (add_embeddings, add_lr_find, add_plot, add_sweep, cmd_embeddings, cmd_lr_find, cmd_plot,
                          cmd_sweep)
from .export import add_export, cmd_export
from .train import add_train, cmd_train
from .tune import add_tune, cmd_tune
from .use import (add_classify, add_eval, add_sample, add_score, add_serve, cmd_classify, cmd_eval, cmd_sample,
                  cmd_score, cmd_serve)


COMMANDS = {
    "data": (add_data, cmd_data),
    "train": (add_train, cmd_train),
    "eval": (add_eval, cmd_eval),
    "sample": (add_sample, cmd_sample),
    "score": (add_score, cmd_score),
    "classify": (add_classify, cmd_classify),
    "ngram": (add_ngram, cmd_ngram),
    "mix": (add_mix, cmd_mix),
    "ensemble": (add_ensemble, cmd_ensemble),
    "tune": (add_tune, cmd_tune),
    "lr-find": (add_lr_find, cmd_lr_find),
    "sweep": (add_sweep, cmd_sweep),
    "plot": (add_plot, cmd_plot),
    "embeddings": (add_embeddings, cmd_embeddings),
    "serve": (add_serve, cmd_serve),
    "export": (add_export, cmd_export),
}


# What a command stopped by Ctrl-C left, and how to go on (train says so itself).
AFTER_INTERRUPT = {
    "sweep": "; the same command again skips the configurations that finished",
    "tune": "; the trial that was running is marked failed, and the same command again continues the study",
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
    parser.commands = sub.choices  # each command's own parser, by name
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args = _intermixed(parser.commands[args.command], args.command, argv)
    args.argv = argv  # the command line as given: what `train --nproc N` starts each worker with
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code = COMMANDS[args.command][1](args)
        sys.stdout.flush()  # here, where a full disk or a closed pipe is still ours to report
        return code
    except UserError as e:
        print(f"makemore: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"makemore: interrupted{AFTER_INTERRUPT.get(args.command, '')}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (MemoryError, RuntimeError) as e:  # numpy's MemoryError, or torch's allocator as a RuntimeError
        if isinstance(e, RuntimeError) and "can't allocate memory" not in str(e) and "out of memory" not in str(e):
            raise
        why = (str(e).splitlines() or [""])[0][:200]
        print(f"makemore: error: out of memory{f' ({why})' if why else ''}: ask for less (a smaller --batch-size, "
              f"model, -n or --max-context)", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # the reader of our output has what it wanted (`| head`)
        _quiet_stdout()
        return 0
    except OSError as e:  # a full disk, a file we may not write: one line naming it (outputs.py)
        _quiet_stdout()
        # our files are written through outputs.py, which names them: one with no name is stdout
        print(f"makemore: error: {os_error(e, 'standard output' if e.filename is None else None)}", file=sys.stderr)
        return EXIT_ERROR


def _intermixed(command: argparse.ArgumentParser, name: str, argv: list[str]) -> argparse.Namespace:
    """The command's arguments read again with its words anywhere among its flags (`score RUN emma
    --json xqzt`): argparse takes a list of words only in one piece. An argument it still does not
    know is said by the command's parser, whose --help lists what it takes."""
    try:
        args = command.parse_intermixed_args(argv[argv.index(name) + 1:])
    except TypeError:  # a command whose parser argparse cannot read so
        args, extra = command.parse_known_args(argv[argv.index(name) + 1:])
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    args.command = name
    return args


if __name__ == "__main__":
    sys.exit(main())
