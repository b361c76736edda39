"""`makemore train`: a thin layer over fit.train (and fit.resume), and the launcher of
data-parallel workers (launch.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from .common import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, _load_corpus, _subparser, add_data_flags,
                     add_model_flags, setting_flags)


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
                   help="train K seeds (--seed, --seed+1, ...) into OUT/seed-<s>/: a seed ensemble, which eval, "
                        "sample and score average (default 1); on a CPU with K cores or more, side by side in K "
                        "processes, each in the time of one run")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-mix", action="store_true",
                   help="with --budget and no --preset: train the model alone, without the count model a "
                        "budget run otherwise counts (Kneser-Ney, or its learned interpolation) and mixes it with; "
                        "`makemore mix RUN` mixes any run later")
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
    from .. import distributed, launch
    from ..devices import usable_cores

    if launch.launches(args.nproc, args.nnodes):
        if args.budget:  # said here, before any worker starts (each would plan its own number of steps)
            raise UserError("--budget is not supported with several workers (--nproc/--nnodes) yet; give --steps")
        if args.threads and args.nproc and args.nproc * args.threads > usable_cores():
            raise UserError(f"--nproc {args.nproc} workers of --threads {args.threads} are "
                            f"{args.nproc * args.threads} threads on {usable_cores()} cores: they would wait for one "
                            f"another; give --threads {max(1, usable_cores() // args.nproc)} or fewer")
        return launch.launch(args.argv, args.nproc, args.nnodes, args.rdzv_endpoint, args.dist_timeout,
                             args.threads or 0)
    with distributed.worker(args.dist_timeout, args.threads):
        return _cmd_train(args)


def _settings(args, exclude: tuple = ()) -> dict:
    """The setting flags given (None: not given)."""
    from ..config import TRAIN_FIELDS

    names = [n for n in TRAIN_FIELDS if n != "betas"] + list(setting_flags())
    return {n: getattr(args, n, None) for n in names if n not in exclude}


def _cmd_train(args) -> int:
    from ..distributed import is_writer
    from ..fit import resume, train
    from ..outputs import check_new_dir
    from ..ensembles import EnsembleResult
    from ..training import new_run_hint

    progress = False if args.quiet else None
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.resume:
        given = [name for name, value in _settings(args, exclude=("steps", "threads")).items() if value is not None]
        given += [name for name in ("preset", "model", "out", "data", "from_study") if getattr(args, name)]
        if args.seeds > 1:
            given.append("seeds")
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise UserError(f"{flags} cannot apply to --resume: RUN continues as it was configured; drop {flags} "
                            f"(only --steps and --threads may change)")
        result = resume(args.resume, steps=args.steps, progress=progress, threads=args.threads)
    else:
        _apply_study(args)
        if not args.data:
            raise UserError("--data is required (a text file with one item per line, or `names`)")
        if not args.out:
            raise UserError("--out RUN is required: the run directory to create")
        if is_writer():  # before any work; checked again, atomically, when the run creates it
            check_new_dir(args.out, hint=new_run_hint(Path(args.out)))
        corpus = _load_corpus(args)
        preset = args.preset
        if args.from_study and preset is None:  # the study's settings over its model's own recipe, not a budget's
            from ..models import DEFAULT_MODEL, module

            preset = module(args.model or DEFAULT_MODEL).DEFAULT_PRESET
        result = train(corpus, None, None, Path(args.out), preset=preset, model=args.model, seeds=args.seeds,
                       mix=False if args.no_mix else None, progress=progress, **_settings(args))
        if isinstance(result, EnsembleResult):
            return _print_ensemble(result)
    _print_summary(result.summary, result.run_dir)
    if result.status == "interrupted" and is_writer():
        print(result.message, file=sys.stderr)
    if result.status == "diverged" and is_writer():
        print(f"makemore: error: {result.message}", file=sys.stderr)
    return _exit_status([result])


def _print_mixture(mix: dict, run_dir) -> None:
    what = {"mixture": "the mixture is the run's result",
            "ngram": "the neural model adds nothing to it: the count model is the run's result",
            "model": "the count model adds nothing: the neural model is the run's result"}[mix.get("result", "mixture")]
    subset = f" on {mix['dev_examples']:,} dev examples" if mix.get("dev_examples") else ""
    partner, how = ((f"the learned interpolation of {mix['ngram_context']} characters' counts", "counted and trained")
                    if mix.get("count_model") == "learned" else (f"Kneser-Ney of {mix['ngram_context']} characters",
                                                                 "counted"))
    how = f"{how} in {mix.get('count_seconds') or 0:.2f} s"
    if mix.get("learned_apart"):
        how = f"counted in {mix.get('count_seconds') or 0:.2f} s, trained {mix['learned_steps']:,} steps beside the model"
    print(f"mixture     dev {mix['mix_dev_loss']:.4f}{subset}  with {partner} "
          f"(dev {mix['ngram_dev_loss']:.4f}, {how}), weight "
          f"{mix['weight']:.3f} on the model; {what} (eval, sample, score and serve use it; --neural for the "
          f"model alone; {Path(run_dir) / 'mix.json'})")


def _print_ensemble(ens) -> int:
    first = ens.results[0].summary
    print(f"model       {first.get('model', 'mlp')}, {first['params']:,} parameters per member")
    if ens.processes > 1:  # each member its own loop: its own steps (a budget's) and time
        threads = first.get("setup", {}).get("threads") or 1
        print(f"steps       {len(ens.results)} seeds side by side, one process each on {threads} thread"
              f"{'s' if threads > 1 else ''} ({first['engine']} engine, {first['device']})")
    else:
        print(f"steps       {first['steps']:,}; {len(ens.results)} seeds trained together ({first['engine']} engine, "
              f"{first['device']}, {first['seconds']:.1f} s)")
    for seed, r in zip(ens.seeds, ens.results):
        alone = f"{r.summary['steps']:,} steps in {r.summary['seconds']:.1f} s, " if ens.processes > 1 else ""
        print(f"  seed {seed:<6} train {r.summary['train_loss']:.4f}  dev {r.summary['dev_loss']:.4f}  "
              f"({alone}best step {r.summary['best_step']:,}, {r.status})")
    print(f"dev loss    {ens.dev_loss:.4f}  (the ensemble: mean of the {len(ens.members)} members' probabilities)")
    if ens.mix is not None and ens.run_dir is not None:
        _print_mixture(ens.mix, ens.run_dir)
    print(f"run         {ens.run_dir}")
    diverged = [r for r in ens.results if r.status == "diverged"]
    if diverged:
        print(f"makemore: error: {len(diverged)} of {len(ens.results)} seeds diverged; {diverged[0].run_dir.name}: "
              f"{diverged[0].message}", file=sys.stderr)
    if any(r.status == "interrupted" for r in ens.results):
        print(f"interrupted; each member's progress is saved and resumes on its own "
              f"(makemore train --resume {ens.run_dir}/seed-<s>)", file=sys.stderr)
    return _exit_status(ens.results)


def _apply_study(args) -> None:
    """`train --from-study NAME`: the study's best settings fill every flag not given."""
    if not args.from_study:
        if args.storage:
            raise UserError("--storage is read with --from-study NAME only")
        return
    from ..tune import DEFAULT_OUT, best_settings, default_storage
    from ..tune.space import DEFAULT_READING

    best = best_settings(args.from_study, args.storage or default_storage(DEFAULT_OUT))
    for field, value in best["settings"].items():
        if getattr(args, field, None) is None:
            setattr(args, field, value)
    if not args.data:
        args.data = best["data"]
    if args.split_seed == 42:
        args.split_seed = best["split_seed"]
    args.labels = args.labels or best["labels"]
    for field, value in best["reading"].items():  # read as the study read it, unless said otherwise
        if getattr(args, field) == DEFAULT_READING[field]:
            setattr(args, field, value)
    print(f"note: settings of trial {best['trial']} of study {args.from_study!r} (dev {best['dev_loss']:.4f})",
          file=sys.stderr)
