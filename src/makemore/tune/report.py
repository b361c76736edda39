"""Reading a study back: its finished trials as a table, the best one and the settings and
command that train it again (`makemore tune --report`, `makemore train --from-study`), and
Optuna's own pictures of the search.

The pictures are optuna.visualization.matplotlib's: the optimization history, the intermediate
values (each trial's dev loss at every evaluation, pruned trials included: what the median
pruner compared) and the settings' importances by PED-ANOVA (Watanabe, Bansal and Hutter 2023,
"PED-ANOVA: efficiently quantifying hyperparameter importance in arbitrary subspaces", IJCAI),
which needs numpy only, where fANOVA would need scikit-learn.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path

from .. import models
from ..errors import UserError
from ..outputs import atomic_write
from .space import DEFAULT_READING, DEFAULT_STEPS, train_command, trial_settings
from .storage import STUDY_ATTR, _optuna, load_study, redact

# Column headings of the searched settings (a setting not named here is headed by its name).
SHORT = {"block_size": "block", "emb_dim": "emb", "batch_size": "batch", "weight_decay": "wd",
         "dropout": "drop", "weight_drop": "wdrop", "teacher": "teach"}


def _counts(study) -> dict:
    """The number of the study's trials in each state."""
    optuna = _optuna()
    counts = {s: 0 for s in optuna.trial.TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def _trial_line(t) -> str:
    """A finished trial in one line, as its worker logs it."""
    state = t.state.name.lower()
    a = t.user_attrs
    dev = a.get("dev_loss", t.value)
    figures = f"dev {dev:.4f}" if dev is not None else "no result"
    if state == "pruned":
        figures += f" at step {a.get('steps_done', '?')}"
    params = f"{a['params']:,} params" if "params" in a else ""
    secs = f"{a['seconds']:.1f} s" if a.get("seconds") is not None else ""
    space = " ".join(f"{SHORT.get(k, k)} {_short(v)}" for k, v in t.params.items())
    return f"trial {t.number}: {state:<8} {figures}  {params}  {secs}  [{space}]"


def _short(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def table_rows(study, top: int | None = None) -> list[dict]:
    """Finished trials, best dev loss first (pruned ones after, by their last dev loss)."""
    optuna = _optuna()
    S = optuna.trial.TrialState
    rows = []
    for t in study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED)):
        a = t.user_attrs
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "dev_loss": t.value if t.state == S.COMPLETE else a.get("dev_loss"),
                     "train_loss": a.get("train_loss"), "params": a.get("params"), "seconds": a.get("seconds"),
                     "steps_done": a.get("steps_done"), "run_dir": a.get("run_dir"),
                     **t.params})
    rows.sort(key=lambda r: (r["state"] != "complete", math.inf if r["dev_loss"] is None else r["dev_loss"]))
    return rows[:top] if top else rows


ROW_FIELDS = ("trial", "state", "dev_loss", "train_loss", "params", "seconds", "steps_done", "run_dir")


def format_table(rows: list[dict]) -> str:
    searched = list(dict.fromkeys(k for r in rows for k in r if k not in ROW_FIELDS))  # in the space's order
    head = ["rank", "trial", "state", "dev", "train", "params", "sec"] + [SHORT.get(k, k) for k in searched]
    body = []
    for i, r in enumerate(rows, 1):
        num = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        body.append([str(i), str(r["trial"]), r["state"], num(r["dev_loss"], ".4f"), num(r["train_loss"], ".4f"),
                     num(r["params"], ","), num(r["seconds"], ".1f")]
                    + ["-" if r.get(k) is None else _short(r[k]) for k in searched])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def best_trial(study):
    optuna = _optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise UserError(f"study {study.study_name!r} has no completed trial yet")
    return min(complete, key=lambda t: t.value)


def best_settings(study_name: str, url: str) -> dict:
    """What `makemore train --from-study` needs: the best trial's settings and the study's data."""
    study = load_study(study_name, url)
    t = best_trial(study)
    attrs = study.user_attrs.get(STUDY_ATTR, {})
    settings = t.user_attrs.get("settings") or trial_settings(
        {**{"steps": attrs.get("steps_cap", DEFAULT_STEPS)}, **t.params}, attrs.get("seed", 42),
        model=attrs.get("model", models.DEFAULT_MODEL))
    data = attrs.get("data")
    if data is not None and data != "names":
        data = attrs.get("source", data)
    return {"settings": settings, "data": data, "split_seed": attrs.get("split_seed", 42),
            "labels": bool(attrs.get("labels")), "reading": attrs.get("reading", DEFAULT_READING),
            "trial": t.number, "dev_loss": t.value}


def summary(study, top: int = 10, url: str | None = None) -> dict:
    rows = table_rows(study, top)
    model = study.user_attrs.get(STUDY_ATTR, {}).get("model", models.DEFAULT_MODEL)
    result = {"study": study.study_name, "model": model, "counts": {s.name.lower(): n for s, n in _counts(study).items() if n},
              "top": rows, "best": None}
    with contextlib.suppress(UserError):
        t = best_trial(study)
        attrs = study.user_attrs.get(STUDY_ATTR, {})
        data = attrs.get("data", "DATA")
        if data != "names":
            data = attrs.get("source", data)
        result["best"] = {"trial": t.number, "dev_loss": t.value, "settings": t.user_attrs.get("settings"),
                          "run_dir": t.user_attrs.get("run_dir"),
                          "command": train_command(t.user_attrs.get("settings", {}), data,
                                                   split_seed=attrs.get("split_seed", 42),
                                                   labels=bool(attrs.get("labels")),
                                                   reading=attrs.get("reading"))}
        if url is not None:
            result["best"]["from_study"] = (f"makemore train --from-study {study.study_name} "
                                            f"--storage {redact(url)} --out runs/best")
    return result


def print_summary(result: dict) -> None:
    if result["top"]:
        print(format_table([{**r} for r in result["top"]]))
    counts = ", ".join(f"{n} {s}" for s, n in result["counts"].items()) or "no trials yet"
    model = "" if result.get("model", models.DEFAULT_MODEL) == models.DEFAULT_MODEL else f" (--model {result['model']})"
    print(f"study {result['study']!r}{model}: {counts}")
    best = result["best"]
    if best:
        print(f"best: trial {best['trial']}, dev {best['dev_loss']:.4f} ({best['run_dir']})")
        print(f"train it again:\n  {best['command']}")
        if best.get("from_study"):
            print(f"  or: {best['from_study']}")


def write_plots(study, out: Path) -> dict[str, str]:
    """history.png (dev loss over trials), intermediate.png (dev loss curves, pruned ones
    included) and importances.png, drawn by optuna.visualization.matplotlib."""
    optuna = _optuna()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    def save(name: str, draw) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials for this picture
            notes[name] = f"not drawn: {e}"
            return
        fig = ax.figure
        fig.set_size_inches(9, 5.5)
        fig.tight_layout()
        atomic_write(out / name, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        plt.close(fig)
        paths[name] = str(out / name)

    paths: dict[str, str] = {}
    notes: dict[str, str] = {}
    S = optuna.trial.TrialState
    n_complete = len(study.get_trials(deepcopy=False, states=(S.COMPLETE,)))
    save("history.png", lambda: ovm.plot_optimization_history(study, target_name="dev loss"))
    save("intermediate.png", lambda: ovm.plot_intermediate_values(study))
    if n_complete >= 2:  # fANOVA would need scikit-learn; PED-ANOVA is numpy only
        save("importances.png", lambda: ovm.plot_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator(), target_name="dev loss"))
    else:
        notes["importances.png"] = f"not drawn: {n_complete} completed trial(s), at least 2 needed"
    return {"written": paths, "skipped": notes}
