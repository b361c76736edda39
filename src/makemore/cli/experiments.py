"""The lecture's experiments and their pictures: `makemore lr-find`, `sweep`, `plot`, `embeddings`."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from .common import (_cell, _load, _load_corpus, _print_json, _settings_line, _subparser, add_data_flags,
                     add_model_flags, configs_from_args, setting_flags)


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

    from ..experiments import SUGGEST_DIVISOR, lr_find
    from ..outputs import reused_dir

    if args.lr is not None:
        raise UserError("lr-find sweeps the learning rate itself; give the range with --lr-min/--lr-max, not --lr")
    with reused_dir(args.out) as out:  # checked before any work; removed if this fails having written nothing
        corpus = _load_corpus(args)
        model_cfg, train_cfg = configs_from_args(args, corpus.vocab.size)
        divisor = SUGGEST_DIVISOR if args.divide_by is None else args.divide_by
        result = lr_find(corpus, model_cfg, train_cfg, args.lr_min, args.lr_max, args.steps, divisor=divisor,
                         seeds=args.seeds)
        csv_path, png_path = _write_lr_find(out, result, corpus, model_cfg, train_cfg, divisor, args)

    report = {"suggested_lr": result.suggested_lr, "rule": result.rule, "lr_at_min": result.lr_at_min,
              "min_smoothed_loss": result.min_smoothed_loss, "diverged_at_step": result.diverged_at,
              "smoothing_window": result.window, "seconds": round(result.seconds, 3), "engine": result.engine,
              "csv": str(csv_path), "png": str(png_path)}
    if args.json:
        _print_json(report)
        return 0
    print(f"suggested lr  {result.suggested_lr:.3g}")
    print(f"rule          {result.rule}")
    print(f"smoothing     centred moving average over {result.window} step{'s' if result.window != 1 else ''}")
    if result.diverged_at is not None:
        print(f"diverged      at step {result.diverged_at} (lr {result.rows[result.diverged_at]['lr']:.3g}); "
              f"no steps after it")
    print(f"time          {result.seconds:.1f} s ({result.engine} engine)")
    print(f"wrote         {csv_path} ({len(result.rows)} rows)")
    print(f"wrote         {png_path}")
    return 0


def _write_lr_find(out: Path, result, corpus, model_cfg, train_cfg, divisor: float, args) -> tuple[Path, Path]:
    """lr_find.csv and lr_find.png in OUT."""
    import csv

    from ..experiments import LR_FIND_FIELDS as fields
    from ..outputs import atomic_write
    from ..plots import plot_lr_find

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in result.rows:
                writer.writerow({k: "" if row[k] is None else row[k] for k in fields})

    csv_path, png_path = out / "lr_find.csv", out / "lr_find.png"
    atomic_write(csv_path, write_csv)
    plot_lr_find(result.rows, result.suggested_lr, png_path,
                 f"Learning-rate range test on {Path(corpus.source).name}: {args.steps:,} steps, "
                 f"{args.preset or 'default'} preset" + (f", mean of {args.seeds} seeds" if args.seeds > 1 else ""),
                 f"{_settings_line(model_cfg, train_cfg)}; suggested lr {result.suggested_lr:.3g} = "
                 f"lr at the minimum / {divisor:g}")
    return csv_path, png_path


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
    from ..experiments import parse_grid, sweep, table_fields
    from ..plots import plot_sweep

    from ..config import TRAIN_FIELDS, preset_model

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


def add_plot(sub) -> None:
    p = _subparser(sub, "plot", "draw a run's training and dev loss and its learning rate against steps: RUN/loss.png",
                   "makemore plot runs/lecture")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--out", metavar="FILE", help="where to write the picture: .png, .svg, .pdf or .jpg (default "
                   "RUN/loss.png)")


def cmd_plot(args) -> int:
    from ..models import count_params
    from ..outputs import output_file
    from ..plots import plot_loss
    from ..rundir import read_metrics, read_summary
    from ..runs import read_run_files

    run = Path(args.run)
    _, model_cfg, train_cfg, vocab, splits = read_run_files(run)
    png_path = output_file(args.out) if args.out is not None else run / "loss.png"
    metrics = read_metrics(run / "metrics.csv")
    summary = read_summary(run)
    if summary:
        steps = summary.get('steps', 0)
        status = (f"; {summary.get('status', '?')} after {steps:,} step{'' if steps == 1 else 's'}, "
                  f"{summary.get('seconds', 0):.0f} s")
    else:
        status = "; still training (no summary.json yet)"
    settings = f"{_settings_line(model_cfg, train_cfg)}, {train_cfg.schedule} schedule from lr {train_cfg.lr:g}"
    png = plot_loss(metrics, png_path,
                    f"{run.resolve().name}: loss during training ({count_params(model_cfg):,} parameters)",
                    settings + status, _dev_label(vocab, splits["dev"], train_cfg.eval_examples))
    print(f"wrote {png}")
    return 0


def _dev_label(vocab, dev_words: list[str], eval_examples: int) -> str:
    """What the dev losses in metrics.csv were estimated on: the whole split, or a subset of it."""
    from ..data import Examples

    examples = len(Examples.from_words(dev_words, vocab))
    if eval_examples >= examples:
        return "dev (whole split)"
    return f"dev (estimate on {eval_examples:,} of its {examples:,} examples)"


def add_embeddings(sub) -> None:
    p = _subparser(sub, "embeddings", "draw a run's character embeddings C (PCA to 2-D when wider): "
                   "RUN/embeddings.png; print each character's nearest neighbours (of a vocabulary past "
                   "100 characters: the 100 most frequent, among themselves)",
                   "makemore embeddings runs/tiny2d")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--neighbours", type=int, default=3, help="nearest neighbours to print per character (default 3)")
    p.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean",
                   help="distance for the neighbours, in the full embedding space (default euclidean)")
    p.add_argument("--all", action="store_true",
                   help="list every character of a vocabulary past 100, with neighbours among all of them")
    p.add_argument("--out", metavar="FILE", help="where to write the picture: .png, .svg, .pdf or .jpg (default "
                   "RUN/embeddings.png)")
    p.add_argument("--json", action="store_true")


def cmd_embeddings(args) -> int:
    import numpy as np

    from ..experiments import embedding_projection, nearest_neighbours
    from ..plots import MAX_WRITTEN, plot_embeddings, written_characters

    if args.neighbours < 1:
        raise UserError(f"--neighbours must be at least 1, got {args.neighbours}")
    from ..outputs import output_file

    run = _load(args.run)
    png_path = output_file(args.out) if args.out is not None else run.path / "embeddings.png"
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
    counts = None
    if len(chars) > MAX_WRITTEN:  # the picture writes the most frequent characters only
        counts = np.bincount(run.corpus().encoded("train").ids, minlength=len(chars))
    png = plot_embeddings(xy, chars, png_path, title, *labels,
                          subtitle=f"{run.model.num_params():,} parameters; close characters are interchangeable "
                                   "to the network", counts=counts)
    # Past MAX_WRITTEN characters, those the picture writes, among themselves: a rare character's
    # embedding has barely moved from its initial value, so it would be everyone's neighbour
    # and thousands of lines would bury the ones worth reading.
    listed = np.arange(len(chars)) if args.all else written_characters(len(chars), counts)
    neighbours = nearest_neighbours(C[listed], args.neighbours, args.metric)
    named = {chars[listed[i]]: [(chars[listed[j]], d) for j, d in nn] for i, nn in enumerate(neighbours)}
    unit = "1 - cosine similarity" if args.metric == "cosine" else "euclidean distance"
    if args.json:
        _print_json({"path": str(png), "emb_dim": dim, "variance_share": share, "metric": args.metric,
                     "neighbours": {c: [list(n) for n in nn] for c, nn in named.items()}})
        return 0
    print(f"wrote {png}")
    if dim > 2:
        print(f"PCA: the two axes keep {share:.1%} of the variance of the {dim}-D embeddings "
              f"({shares[0]:.1%} + {shares[1]:.1%})")
    among = "" if len(listed) == len(chars) else (
        f"; the {len(listed)} most frequent of {len(chars):,} characters, among themselves (--all for every one)")
    print(f"nearest neighbours ({unit} in the full {dim}-D embedding space; '{run.vocab.boundary}' is the "
          f"boundary token{among}):")
    for c, nn in named.items():
        print(f"  {c}  " + "  ".join(f"{n} {d:.3f}" for n, d in nn))
    return 0
