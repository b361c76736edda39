"""Every picture: training curves, the learning-rate range test, embeddings, sweeps.

Figures are drawn with matplotlib's object API on an Agg canvas (`Figure` + `FigureCanvasAgg`,
never pyplot): nothing opens a window or touches a notebook's global backend, and a figure
is freed as soon as it goes out of scope. Each PNG is written atomically (utils.atomic_write),
small (DPI 100, about 7 x 4.5 inches). matplotlib is imported only when a picture is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import UserError
from .outputs import atomic_write

DPI = 100
SIZE = (7.0, 4.5)  # inches: 700 x 450 pixels
TRAIN_COLOR, DEV_COLOR, LR_COLOR = "tab:blue", "tab:orange", "0.45"


def new_figure(size: tuple[float, float] = SIZE):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# What a picture's --out may end in: the format is the extension's.
FIGURE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".jpg": "jpeg", ".jpeg": "jpeg"}


def save_figure(fig, path: str | Path) -> Path:
    """Write `fig` at `path` in the format its extension names (PNG, SVG, PDF or JPEG),
    atomically (temp file beside it, then os.replace). Characters that matplotlib's fonts
    cannot draw (a list in many scripts) come out as boxes: one note says how many, not one
    warning per glyph."""
    import re
    import sys
    import warnings

    path = Path(path)
    fmt = FIGURE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: a picture is written as {', '.join(sorted(set(FIGURE_FORMATS)))}; give --out a "
                        f"name ending in one of them")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=DPI))
    glyphs = set()
    for w in caught:
        missing = re.search(r"Glyph (\d+) .*missing from font", str(w.message))
        if missing:
            glyphs.add(missing.group(1))
        else:  # any other warning as it was
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if glyphs:
        print(f"note: {len(glyphs):,} character{'s' if len(glyphs) > 1 else ''} with no glyph in matplotlib's "
              f"fonts drawn as boxes in {path}", file=sys.stderr)
    return path


def _titles(fig, ax, title: str, subtitle: str = "") -> None:
    """Title above the figure; the subtitle (settings, notes) in small grey, wrapped to fit."""
    import textwrap

    fig.suptitle(title, fontsize=11)
    if subtitle:
        ax.set_title("\n".join(textwrap.wrap(subtitle, int(fig.get_figwidth() * 14.5))), fontsize=9, color="0.3")


def _log_y(ax) -> None:
    """A log-scale y axis whose ticks read as plain numbers (2, 2.5, 3, ... not 10^0.3)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _log_x(ax, number_format: str) -> None:
    """A log-scale x axis with ticks at 1, 2, 5 x 10^k, written as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: number_format.format(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


# ----------------------------------------------------------------------------------------
# Training curves of a run: RUN/metrics.csv (rundir.read_metrics) -> RUN/loss.png


def plot_loss(metrics: dict[str, np.ndarray], path: str | Path, title: str, subtitle: str = "",
              dev_label: str = "dev (whole split)") -> Path:
    """Training loss (raw per log interval, light, and its moving average) and dev loss
    (`dev_label`: what it was estimated on) against steps on a log axis, with the learning
    rate on a second y axis."""
    from .experiments import smooth

    fig = new_figure()
    ax = fig.add_subplot()
    step = metrics["step"]
    train, dev, lr = metrics["train_loss"], metrics["dev_loss"], metrics["lr"]
    has_train = np.isfinite(train)
    if has_train.any():
        window = max(1, int(has_train.sum()) // 40) | 1
        ax.plot(step[has_train], train[has_train], color=TRAIN_COLOR, alpha=0.25, lw=0.8,
                label="train (minibatch mean per log interval)")
        if window > 1:  # a moving average of 1 is the light curve again
            ax.plot(step[has_train], smooth(train[has_train], window), color=TRAIN_COLOR, lw=1.8,
                    label=f"train, moving average of {window}")
    has_dev = np.isfinite(dev)
    if has_dev.any():
        ax.plot(step[has_dev], dev[has_dev], color=DEV_COLOR, lw=1.5, marker="o", ms=3.5, label=dev_label)
        i = int(np.nanargmin(dev))
        ax.axhline(dev[i], color=DEV_COLOR, lw=0.8, ls=":")
        # Near either end of the axis the label extends inwards, or it is cut off at the edge.
        where = step[i] / max(1.0, float(np.nanmax(step)))
        ax.annotate(f"best dev {dev[i]:.4f} (step {int(step[i]):,})", (step[i], dev[i]),
                    xytext=(6, 4) if where < 0.15 else (0, -14), textcoords="offset points",
                    ha="left" if where < 0.15 else "right" if where > 0.85 else "center", fontsize=8, color=DEV_COLOR)
    _log_y(ax)
    ax.set_xlabel("step (minibatch updates)")
    ax.set_ylabel("loss (nats per character, log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlim(0, max(1.0, float(np.nanmax(step))))

    lr_ax = ax.twinx()
    has_lr = np.isfinite(lr)
    lr_ax.plot(step[has_lr], lr[has_lr], color=LR_COLOR, lw=1.0, ls="--", drawstyle="steps-post", label="learning rate")
    lr_ax.set_ylabel("learning rate", color=LR_COLOR)
    lr_ax.tick_params(axis="y", colors=LR_COLOR)
    lr_ax.set_ylim(0, float(np.nanmax(lr)) * 1.1 if has_lr.any() else 1.0)

    handles = ax.get_legend_handles_labels()[0] + lr_ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8, framealpha=0.9)
    _titles(fig, ax, title, subtitle)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# Learning-rate range test


def plot_lr_find(rows: list[dict], suggested_lr: float, path: str | Path, title: str, subtitle: str = "") -> Path:
    """Minibatch loss against the learning rate (log axis; log10 lr on top), raw and smoothed,
    with the minimum of the smoothed curve and the suggested rate marked."""
    fig = new_figure()
    ax = fig.add_subplot()
    lr = np.array([r["lr"] for r in rows])
    loss = np.array([np.nan if r["loss"] is None else r["loss"] for r in rows])
    smoothed = np.array([np.nan if r["smoothed_loss"] is None else r["smoothed_loss"] for r in rows])
    ax.plot(lr, loss, color=TRAIN_COLOR, alpha=0.3, lw=0.8, label="minibatch loss")
    ax.plot(lr, smoothed, color=TRAIN_COLOR, lw=2.0, label="smoothed (centred moving average)")
    if np.isfinite(smoothed).any():
        i = int(np.nanargmin(smoothed))
        ax.plot([lr[i]], [smoothed[i]], "o", color="black", ms=5,
                label=f"minimum of the smoothed loss: {smoothed[i]:.3g} at lr {lr[i]:.3g}")
        # show the whole descent and the rise back up to where it started; not the blow-up
        top = float(np.nanmax(smoothed[: i + 1]))
        bottom = float(np.nanmin(loss))
        pad = 0.05 * (top - bottom) if top > bottom else 0.5
        ax.set_ylim(bottom - pad, top + pad)
    ax.axvline(suggested_lr, color="tab:green", lw=1.5, ls="--", label=f"suggested lr {suggested_lr:.3g}")
    if np.isnan(loss).any() and np.isfinite(loss).any():
        first = int(np.argmax(np.isnan(loss)))
        ax.axvspan(lr[first], lr[-1], color="tab:red", alpha=0.08, label="diverged: training stopped")
    ax.set_xscale("log")
    ax.set_xlim(lr[0], lr[-1])
    ax.set_xlabel("learning rate (log scale; one minibatch step at each)")
    ax.set_ylabel("minibatch loss (nats per character)")
    ax.grid(True, which="major", alpha=0.3)
    # the same axis read as the lecture's lre = log10(lr), on top
    from matplotlib.ticker import NullLocator

    top_axis = ax.secondary_xaxis("top")
    exponents = np.arange(math.ceil(math.log10(lr[0]) - 1e-9), math.floor(math.log10(lr[-1]) + 1e-9) + 1)
    top_axis.set_xticks(10.0 ** exponents, labels=[f"{e:g}" for e in exponents])
    top_axis.xaxis.set_minor_locator(NullLocator())
    top_axis.set_xlabel("log10 learning rate (the lecture's lre)", fontsize=9)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    _titles(fig, ax, title, subtitle)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# Embeddings


# Characters written in boxes at most: past this (a list in many scripts) the most frequent are
# written and the others drawn as dots, so that the picture stays readable and quick to draw.
MAX_WRITTEN = 100


def written_characters(vocab_size: int, counts: np.ndarray | None = None, most: int | None = None) -> np.ndarray:
    """The ids of the characters plot_embeddings writes: all of a vocabulary up to `most`
    (MAX_WRITTEN); past it the boundary token and the most frequent others by `counts` (the
    first ids where there are none), ascending."""
    most = MAX_WRITTEN if most is None else most
    if vocab_size <= most:
        return np.arange(vocab_size)
    others = np.arange(1, vocab_size)
    if counts is not None:
        others = others[np.argsort(-np.asarray(counts)[1:], kind="stable")]
    return np.union1d([0], others[:most - 1])


def plot_embeddings(xy: np.ndarray, chars: str, path: str | Path, title: str,
                    xlabel: str, ylabel: str, subtitle: str = "", counts: np.ndarray | None = None) -> Path:
    """Each character written at its 2-D position in a white box, as in the lecture's plot of
    C; the boundary token in red, vowels in blue, everything else in black. Of a vocabulary
    past MAX_WRITTEN characters, the MAX_WRITTEN most frequent (by `counts`, the training
    split's; else the first) are written, the others drawn as grey dots."""
    fig = new_figure((6.0, 6.0))
    ax = fig.add_subplot()
    groups = {"boundary token": "tab:red", "vowel": "tab:blue", "other": "black"}
    written = written_characters(len(chars), counts)
    if len(written) < len(chars):
        dots = np.setdiff1d(np.arange(len(chars)), written)
        ax.scatter(xy[dots, 0], xy[dots, 1], s=3, color="0.6", zorder=2, linewidths=0)
        subtitle = (f"{subtitle}; " if subtitle else "") + (
            f"the {len(written):,} most frequent of {len(chars):,} characters written, the others as dots")
    for i in written:
        c = chars[i]
        group = "boundary token" if i == 0 else "vowel" if c.lower() in "aeiouy" else "other"
        ax.text(xy[i, 0], xy[i, 1], c if c.strip() else repr(c), ha="center", va="center", fontsize=11,
                fontweight="bold", color=groups[group], zorder=3,
                bbox=dict(boxstyle="round,pad=0.3", fc="white", ec=groups[group], lw=1.0))
    # Text does not move the axis limits: set them from the points, with room for the boxes,
    # to the same span on both axes so that distances on the page are distances in C.
    centre = (xy.min(axis=0) + xy.max(axis=0)) / 2
    half = max(float(np.ptp(xy, axis=0).max()), 1e-6) * 0.58
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_aspect("equal", adjustable="box")
    from matplotlib.lines import Line2D

    legend = [Line2D([], [], ls="", marker="s", mfc="white", mec=color, ms=9, label=label + (" 'aeiouy'" if label == "vowel" else ""))
              for label, color in groups.items()]
    ax.legend(handles=legend, loc="best", fontsize=8, framealpha=0.9)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _titles(fig, ax, title, subtitle)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# Sweeps


def plot_sweep(table: list[dict], grid: dict[str, list], path: str | Path, title: str, subtitle: str = "") -> Path:
    """Dev loss (filled) and train loss (hollow) of each configuration against its parameter
    count (log axis), joined by a line whose length is the train-dev gap; colour by the
    first grid key, each point labelled with the values of the others."""
    fig = new_figure()
    ax = fig.add_subplot()
    keys = list(grid)
    colour_key, label_keys = keys[0], keys[1:]
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
               "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
    colours = {v: palette[i % len(palette)] for i, v in enumerate(grid[colour_key])}
    for row in table:
        x, dev, tr = row["params"], row["dev_loss"], row["train_loss"]
        colour = colours[row[colour_key]]
        ax.plot([x, x], [tr, dev], color=colour, lw=1.0, alpha=0.6)
        ax.plot([x], [dev], "o", color=colour, ms=7)
        ax.plot([x], [tr], "o", mfc="white", mec=colour, ms=6)
        if label_keys:
            ax.annotate("/".join(str(row[k]) for k in label_keys), (x, dev), xytext=(5, 3),
                        textcoords="offset points", fontsize=7, color="0.25")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=c, ms=7, label=f"{colour_key}={v}") for v, c in colours.items()]
    handles += [Line2D([], [], ls="", marker="o", color="0.3", ms=7, label="dev loss"),
                Line2D([], [], ls="", marker="o", mfc="white", mec="0.3", ms=6, label="train loss")]
    ax.legend(handles=handles, fontsize=8, loc="best", framealpha=0.9)
    _log_x(ax, "{:,.0f}")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("loss (nats per character, whole split)")
    ax.grid(True, which="both", alpha=0.25)
    note = f"labels: {'/'.join(label_keys)}; " if label_keys else ""
    _titles(fig, ax, title, subtitle or f"{note}line = train-dev gap")
    return save_figure(fig, path)



# ----------------------------------------------------------------------------------------
# The best dev loss for a time budget (issue 12): scripts/budget_plot.py -> docs/budget.png


def plot_budget(trials: list[dict], recipes: list[dict], counts: list[dict], path: str | Path, title: str,
                subtitle: str = "", runs: list[dict] | None = None, budget_runs: list[dict] | None = None) -> Path:
    """Dev loss against seconds of training (log axis): every trial of the budget studies
    (small dots at its budget), the recipe each budget keeps (joined: the best dev loss known
    for that time), the count models at the seconds they take to count and tune, and
    optionally other runs (the presets) at their training time. Each item: {"seconds", "dev_loss"}
    (+ "label"). `budget_runs`: fresh `train --budget` runs, {"seconds", "dev_loss", "mix_dev_loss"},
    each a {"median", "min", "max"}: the model alone and its mixture with a count model, median and range."""
    fig = new_figure()
    ax = fig.add_subplot()
    for key, style, color, label in (("dev_loss", "o:", "tab:cyan", "train --budget: the model alone"),
                                     ("mix_dev_loss", "D-", "tab:purple",
                                      "train --budget: the result, mixed with its count model")):
        rows = [r for r in budget_runs or [] if r.get(key)]
        if not rows:
            continue
        x, mid = [r["seconds"] for r in rows], [r[key]["median"] for r in rows]
        spread = [[m - r[key]["min"] for m, r in zip(mid, rows)], [r[key]["max"] - m for m, r in zip(mid, rows)]]
        ax.errorbar(x, mid, yerr=spread, fmt=style, color=color, ms=6, capsize=3, lw=1, label=label)
        if key == "mix_dev_loss":
            for xi, m in zip(x, mid):
                ax.annotate(f"{m:.3f}", (xi, m), xytext=(-14, -13), textcoords="offset points", fontsize=8,
                            color=color)
    if trials:
        ax.plot([t["seconds"] for t in trials], [t["dev_loss"] for t in trials], ".", color="tab:blue",
                alpha=0.35, ms=5, label="tune trials (at their budget)")
    if recipes:
        ax.plot([r["seconds"] for r in recipes], [r["dev_loss"] for r in recipes], "o-", color="tab:blue", ms=7,
                label="MLP, best recipe for the budget")
        for r in recipes:
            ax.annotate(f"{r['dev_loss']:.3f}", (r["seconds"], r["dev_loss"]), xytext=(-14, 9),
                        textcoords="offset points", fontsize=8, color="tab:blue")
    if counts:
        ax.plot([c["seconds"] for c in counts], [c["dev_loss"] for c in counts], "x--", color="tab:red", ms=7,
                lw=0.8, label="Kneser-Ney, context 1..6 (count + tune)")
        best = min(counts, key=lambda c: c["dev_loss"])
        for c in counts:  # the lower orders crowd together: label the first three and the best
            if c is best or c is counts[0] or c["context"] <= 3:
                ax.annotate(f"{c['label']} {c['dev_loss']:.3f}" if c is best else c["label"], (c["seconds"], c["dev_loss"]),
                            xytext=(5, -11), textcoords="offset points", fontsize=7, color="tab:red")
    runs = runs or []
    for r in runs:
        ax.plot([r["seconds"]], [r["dev_loss"]], "s", color="tab:green", ms=5)
        # of two presets of about the same training time, the upper one is labelled above it
        above = any(o is not r and r["seconds"] / 1.3 < o["seconds"] < r["seconds"] * 1.3
                    and o["dev_loss"] < r["dev_loss"] for o in runs)
        ax.annotate(r["label"], (r["seconds"], r["dev_loss"]), xytext=(-10, 6 if above else -12),
                    textcoords="offset points", fontsize=7, color="tab:green")
    _log_x(ax, "{:g}")
    ax.set_xlabel("seconds of training (log scale)")
    ax.set_ylabel("dev loss (nats per character)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    _titles(fig, ax, title, subtitle)
    return save_figure(fig, path)
