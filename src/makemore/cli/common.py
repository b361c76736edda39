"""What every command shares: the parser, flags made from config fields, loading data and runs,
argument types, and printing."""

from __future__ import annotations

import argparse
import io
import json
import sys

from ..errors import UserError

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, as every other error here; flags are spelled out
    whole (no abbreviations: a worker's command line is the launcher's less its own flags)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def columns(text: str) -> int:
    """How many terminal columns `text` takes: a CJK character or an emoji two, a combining mark
    none, anything else one (len() would misalign a table of words in many scripts)."""
    import unicodedata

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, width: int) -> str:
    """`text` left-aligned in `width` terminal columns (columns)."""
    return text + " " * max(0, width - columns(text))


def _quiet_stdout() -> None:
    """After the reader closed the pipe (`| head`): point stdout at /dev/null, so that the
    interpreter's last flush at exit does not fail again with a message on stderr."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


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
    from ..budget import parse_seconds

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
    from .. import models

    owners: dict[str, list[str]] = {}
    for model in models.REGISTRY:
        for name in models.config_fields(model):
            owners.setdefault(name, []).append(model)
    return owners


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model, --preset, and a flag for every setting: training ones, then the models' own."""
    from .. import models
    from ..config import PRESETS, TRAIN_FIELDS

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
    from ..config import TRAIN_FIELDS, make_configs

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
    p.add_argument("--normalize", choices=("nfc", "none"), default="nfc",
                   help="read the text in Unicode normalisation form C, so that a precomposed and a "
                        "decomposed 'é' are one character (default nfc); none: as the file has it")
    p.add_argument("--units", choices=("codepoint", "grapheme"), default="codepoint",
                   help="what one symbol of the vocabulary is: a character (default codepoint), or an "
                        "extended grapheme cluster (grapheme: an accented letter, a Devanagari syllable, an "
                        "emoji with its modifiers is one symbol, never split)")
    p.add_argument("--labels", action="store_true",
                   help="each line is LABEL<TAB>ITEM: one model of many lists, conditioned on the label; the "
                        "split is stratified by label (docs/labels.md)")


def _load_corpus(args):
    from ..data import load_corpus

    return load_corpus(args.data, seed=args.split_seed, min_char_count=args.min_char_count,
                       normalize=args.normalize, units=args.units, labels=getattr(args, "labels", False))


def _load(run: str, ensemble: bool = False):
    """RUN as a Run; with `ensemble`, a seed ensemble directory as an Ensemble too."""
    from ..runs import load_any, load_run

    return load_any(run) if ensemble else load_run(run)


def add_use_flags(p: argparse.ArgumentParser, verb: str) -> None:
    """--mix / --neural: which of a run's predictors to use (default: the run's result, mixture.py)."""
    which = p.add_mutually_exclusive_group()
    which.add_argument("--mix", dest="use", action="store_const", const="mixture",
                       help=f"{verb} the model + n-gram mixture (see `mix`)")
    which.add_argument("--neural", dest="use", action="store_const", const="model",
                       help=f"{verb} the neural model alone (default: the run's result: its mixture with the count "
                            f"model where one was fitted, or the count model where it won)")
    p.set_defaults(use="result")


def _predictor(run, use: str = "result"):
    from ..mixture import run_predictor

    return run_predictor(run, use)


def _whole_number(minimum: int):
    """argparse type: a whole number of at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}" if minimum
                                             else f"must be 0 or more, got {value}")
        return value

    return parse


_at_least_one, _at_least_zero = _whole_number(1), _whole_number(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _settings_line(model_cfg, train_cfg) -> str:
    from dataclasses import asdict

    if model_cfg.name == "mlp":
        shape = (f"block {model_cfg.block_size}, emb {model_cfg.emb_dim}, hidden {model_cfg.hidden}"
                 f"{f' x{model_cfg.layers}' if model_cfg.layers > 1 else ''}, init {model_cfg.init}")
    else:
        shape = f"{model_cfg.name}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in asdict(model_cfg).items()
                                                  if k != "vocab_size")
    return f"{shape}; {train_cfg.optimizer}, batch {train_cfg.batch_size}"


def _cell(value, column: str = "") -> str:
    if column == "seconds":
        return f"{value:,.1f}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
