"""`makemore tune`: hyperparameter search with Optuna, one study shared by any number of workers."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .common import _duration, _load_corpus, _print_json, _subparser, add_data_flags


def add_tune(sub) -> None:
    from .. import models
    from ..tune import DEFAULT_HEARTBEAT, DEFAULT_OUT, DEFAULT_STEPS, DEFAULT_STUDY

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
                   "'{\"hidden\": [32, 256], \"layers\": 1, \"direct\": [false]}' (see docs/tuning.md)")
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

    if args.top < 1:
        raise UserError(f"top must be at least 1, got {args.top}")
    if args.report:
        if args.data or args.trials is not None:
            raise UserError("--report reads an existing study; drop --data/--trials")
        from ..tune import default_storage, load_study, print_summary, summary, write_plots

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
    if args.threads > 0:
        from ..runtime import check_threads, default_blas_threads

        check_threads(args.threads)
        default_blas_threads(args.threads)
    from ..tune import TuneOptions, default_storage, parse_space, print_summary, run_study, summary

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
