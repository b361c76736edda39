"""lr-find, sweep, plot and embeddings: the commands end to end on tiny generated data, and
their numerical parts against independent references (brute force, eigendecomposition)."""

import csv
import json
import shutil
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import makemore.experiments as experiments
from makemore.cli import main
from makemore.config import make_configs
from makemore.data import load_corpus
from makemore.experiments import (embedding_projection, lr_schedule, nearest_neighbours, parse_grid,
                                  smooth, suggest_lr)
from makemore.fit import train

TINY = ["--preset", "lecture", "--emb-dim", "4", "--hidden", "16", "--batch-size", "16"]
SWEEP = ["--preset", "lecture", "--batch-size", "16"]


def assert_png(path: Path) -> tuple[int, int]:
    """A complete, small PNG, and no temp file left beside it (the write is atomic)."""
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.load()  # decodes the whole image: fails on a truncated file
        size = im.size
    assert 200 <= size[0] <= 1000 and 200 <= size[1] <= 1000, size
    assert not list(path.parent.glob(f".{path.name}.*")), "temp file left behind"
    return size


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    from conftest import make_words

    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("\n".join(make_words(300, seed=1)) + "\n")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_file) -> dict[int, Path]:
    """Two short runs, with 2-D and 10-D embeddings."""
    corpus = load_corpus(data_file)
    out = {}
    for emb in (2, 10):
        run = tmp_path_factory.mktemp("runs") / f"emb{emb}"
        model_cfg, train_cfg = make_configs("lecture", vocab_size=corpus.vocab.size, emb_dim=emb, hidden=32,
                                            steps=200, eval_interval=50)
        train(corpus, model_cfg, train_cfg, out=run, progress=False)
        out[emb] = run
    return out


# ----------------------------------------------------------------------------------------
# lr-find


def test_lr_find_writes_csv_plot_and_suggests_a_rate_in_range(data_file, tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(["lr-find", "--data", str(data_file), *TINY, "--steps", "60", "--lr-min", "0.01",
                 "--lr-max", "0.5", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    header, rows = read_csv(out / "lr_find.csv")
    assert header == ["step", "lr", "loss", "smoothed_loss"]
    assert len(rows) == 60
    assert [int(r["step"]) for r in rows] == list(range(60))
    lrs = np.array([float(r["lr"]) for r in rows])
    # exponential: evenly spaced in log10, from lr-min to lr-max inclusive
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.5)
    assert np.allclose(np.diff(np.log10(lrs)), math.log10(50) / 59)
    assert all(r["loss"] and math.isfinite(float(r["loss"])) for r in rows)
    assert 0.01 <= report["suggested_lr"] <= 0.5
    # the stated rule: the rate at the minimum of the smoothed curve, halved (clamped to the range)
    smoothed = np.array([float(r["smoothed_loss"]) for r in rows])
    assert report["lr_at_min"] == pytest.approx(lrs[np.argmin(smoothed)])
    assert report["suggested_lr"] == pytest.approx(min(max(report["lr_at_min"] / 2, 0.01), 0.5))
    assert_png(out / "lr_find.png")


def test_lr_find_text_output_names_the_rule_and_files(data_file, tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(["lr-find", "--data", str(data_file), *TINY, "--steps", "30", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "suggested lr" in text and "minimum of the smoothed loss" in text
    assert str(out / "lr_find.png") in text and str(out / "lr_find.csv") in text


def test_lr_find_past_divergence_keeps_every_row_and_stays_in_range(data_file, tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(["lr-find", "--data", str(data_file), *TINY, "--steps", "40", "--lr-min", "1",
                 "--lr-max", "1e6", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    _, rows = read_csv(out / "lr_find.csv")
    assert len(rows) == 40
    assert 1 <= report["suggested_lr"] <= 1e6
    assert report["diverged_at_step"] is not None
    assert rows[-1]["loss"] == ""  # no step was taken on the broken model
    assert_png(out / "lr_find.png")


def test_suggest_lr_rule_and_bounds():
    lrs = lr_schedule(1e-3, 1.0, 7)  # 1e-3, 10**-2.5, ..., 1
    curve = np.array([5.0, 4.0, 3.0, 2.0, 2.5, 4.0, 9.0])
    assert suggest_lr(lrs, curve, 1e-3, 1.0)[0] == pytest.approx(lrs[3] / 2)
    assert suggest_lr(lrs, curve, 1e-3, 1.0, divisor=10)[0] == pytest.approx(lrs[3] / 10)
    lr, rule = suggest_lr(lrs, np.arange(7.0), 1e-3, 1.0)  # minimum at the very start
    assert lr == pytest.approx(1e-3) and "lower --lr-min" in rule
    lr, rule = suggest_lr(lrs, -np.arange(7.0), 1e-3, 1.0)  # still falling at the end
    assert lr == pytest.approx(0.5) and "higher --lr-max" in rule
    assert suggest_lr(lrs, np.full(7, np.nan), 1e-3, 1.0)[0] == pytest.approx(1e-3)


def test_smooth_is_a_centred_moving_average():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    reference = np.convolve(x, np.ones(5) / 5, mode="valid")  # the interior, where the window is whole
    assert np.allclose(smooth(x, 5)[2:-2], reference)
    assert smooth(x, 5)[0] == pytest.approx(x[:3].mean())  # the window shrinks at the ends
    x[10] = np.nan
    assert smooth(x, 5)[10] == pytest.approx(np.mean(x[[8, 9, 11, 12]]))


def test_lr_find_rejects_a_bad_range(data_file, tmp_path, capsys):
    code = main(["lr-find", "--data", str(data_file), "--lr-min", "0.5", "--lr-max", "0.1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "lr-min" in err[0]
    code = main(["lr-find", "--data", str(data_file), "--lr", "0.1", "--out", str(tmp_path)])
    assert code == 1 and "--lr-min" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# sweep


def sweep_args(data_file, out, steps="30"):
    return ["sweep", "--data", str(data_file), *SWEEP, "--steps", steps, "--grid", "emb-dim=2,6 hidden=8,24",
            "--out", str(out)]


def test_sweep_table_is_sorted_and_a_rerun_trains_nothing(data_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "sweep"
    calls = []
    real_members = experiments.train_members

    def counting_members(corpus, model_cfg, cfgs, dirs, **kwargs):
        calls.extend(dirs)
        return real_members(corpus, model_cfg, cfgs, dirs, **kwargs)

    monkeypatch.setattr(experiments, "train_members", counting_members)
    assert main(sweep_args(data_file, out) + ["--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert len(calls) == 4 and len(table) == 4
    devs = [r["dev_loss"] for r in table]
    assert devs == sorted(devs) and len(set(devs)) == 4
    assert {(r["emb_dim"], r["hidden"]) for r in table} == {(2, 8), (2, 24), (6, 8), (6, 24)}
    for r in table:
        assert r["gap"] == pytest.approx(r["dev_loss"] - r["train_loss"])
        summary = json.loads((out / r["name"] / "summary.json").read_text())
        assert summary["dev_loss"] == r["dev_loss"] and summary["steps"] == 30
    header, rows = read_csv(out / "sweep.csv")
    assert header[:3] == ["name", "emb_dim", "hidden"] and {"params", "train_loss", "dev_loss", "gap", "seconds"} <= set(header)
    assert [float(r["dev_loss"]) for r in rows] == pytest.approx(devs)
    assert json.loads((out / "sweep.json").read_text()) == table
    assert_png(out / "sweep.png")

    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/best.safetensors")}
    calls.clear()
    assert main(sweep_args(data_file, out) + ["--json"]) == 0
    assert calls == []  # nothing trained again
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/best.safetensors")} == mtimes
    assert json.loads(capsys.readouterr().out) == table

    # a run killed before it finished (no summary.json) is trained again, alone, from scratch
    victim = out / table[1]["name"]
    (victim / "summary.json").unlink()
    (victim / "junk.txt").write_text("left over")
    assert main(sweep_args(data_file, out)) == 0
    assert calls == [victim] and not (victim / "junk.txt").exists()
    text = capsys.readouterr().out
    assert "trained 1, skipped 3" in text and str(out / "sweep.png") in text


def test_sweep_refuses_to_overwrite_a_finished_run_of_other_settings(data_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--data", str(data_file), *SWEEP, "--steps", "20", "--grid", "hidden=8",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    code = main(["sweep", "--data", str(data_file), *SWEEP, "--steps", "40", "--grid", "hidden=8",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "another" in err[0]
    assert json.loads((out / "hidden=8" / "summary.json").read_text())["steps"] == 20  # kept


def test_sweep_of_another_grid_into_the_same_folder_keeps_the_earlier_table(data_file, tmp_path, capsys):
    """A sweep's table lists its grid's points: another grid into the same --out would replace it,
    leaving the earlier points' runs unlisted. Refused; a grid that includes them extends it."""
    out = tmp_path / "sweep"
    first = ["sweep", "--data", str(data_file), *SWEEP, "--steps", "20", "--out", str(out)]
    assert main([*first, "--grid", "hidden=8,12"]) == 0
    capsys.readouterr()
    table = (out / "sweep.json").read_text()
    code = main([*first, "--grid", "hidden=16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "another grid" in err[0] and "hidden=12" in err[0]
    assert (out / "sweep.json").read_text() == table and not (out / "hidden=16").exists()
    assert main([*first, "--grid", "hidden=8,12,16", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)].count("hidden=12") == 1


@pytest.mark.parametrize("grid, message", [
    ("emb_dim=2,10 colour=red", "unknown key 'colour'"),
    ("hidden=100,abc", "not a valid int"),
    ("hidden", "KEY=V1,V2"),
    ("hidden=", "empty value"),
    ("hidden=8 hidden=16", "given twice"),
    ("hidden=0", "hidden must be at least 1"),
    ("optimizer=sgd,rmsprop", "unknown optimizer 'rmsprop'"),
])
def test_sweep_bad_grid_is_one_line(data_file, tmp_path, capsys, grid, message):
    code = main(["sweep", "--data", str(data_file), "--grid", grid, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "s").exists()  # checked before anything is trained


def test_sweep_grid_given_twice_is_an_error(data_file, tmp_path, capsys):
    code = main(["sweep", "--data", str(data_file), "--hidden", "8", "--grid", "hidden=8,16", "--out", str(tmp_path)])
    assert code == 1 and "both in the grid and as a flag" in capsys.readouterr().err


def test_parse_grid_types_and_dashes():
    grid = parse_grid("emb-dim=2,10 lr=0.1,1e-2 direct=true,false optimizer=sgd steps=1e3")
    assert grid == {"emb_dim": [2, 10], "lr": [0.1, 0.01], "direct": [True, False], "optimizer": ["sgd"],
                    "steps": [1000]}
    assert isinstance(grid["emb_dim"][0], int) and isinstance(grid["lr"][0], float)


# ----------------------------------------------------------------------------------------
# embeddings and plot


@pytest.mark.parametrize("emb", [2, 10])
def test_embeddings_picture_and_variance_share(runs, emb, capsys):
    run = runs[emb]
    assert main(["embeddings", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert_png(run / "embeddings.png")
    assert report["emb_dim"] == emb and 0.0 <= report["variance_share"] <= 1.0
    vocab = json.loads((run / "vocab.json").read_text())["chars"]
    assert set(report["neighbours"]) == set(vocab)
    assert all(len(nn) == 3 and c not in [n for n, _ in nn] for c, nn in report["neighbours"].items())

    assert main(["embeddings", str(run)]) == 0
    text = capsys.readouterr().out
    assert str(run / "embeddings.png") in text and "nearest neighbours (euclidean" in text
    if emb == 2:
        assert report["variance_share"] == 1.0
    else:
        # independent reference: the top two eigenvalues of C's covariance over their sum
        from safetensors.torch import load_file

        C = load_file(str(run / "best.safetensors"))["C"].double().numpy()
        eig = np.linalg.eigvalsh(np.cov(C, rowvar=False))[::-1]
        share = eig[:2].sum() / eig.sum()
        assert report["variance_share"] == pytest.approx(share)
        assert f"keep {share:.1%} of the variance" in text
        assert 0 < share < 1


def test_embeddings_of_a_big_vocabulary_list_the_most_frequent_among_themselves(tmp_path, capsys):
    """Past 100 characters the listing is the 100 the picture writes (the most frequent), with
    neighbours among them only; --all lists every character."""
    rng = np.random.default_rng(0)
    common, rare = [chr(0x430 + i) for i in range(30)], [chr(0x4E00 + i) for i in range(120)]
    words = ["".join(rng.choice(common, 5)) for _ in range(400)] + [c + common[0] for c in rare]
    data = tmp_path / "words.txt"
    data.write_text("\n".join(words) + "\n")
    corpus = load_corpus(data)
    model_cfg, train_cfg = make_configs("lecture", vocab_size=corpus.vocab.size, emb_dim=4, hidden=8, steps=5)
    train(corpus, model_cfg, train_cfg, out=tmp_path / "run", progress=False)
    vocab = corpus.vocab.chars
    assert len(vocab) > 100

    assert main(["embeddings", str(tmp_path / "run"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["neighbours"]
    assert len(listed) == 100 and set(common) <= set(listed)
    assert all(n in listed for nn in listed.values() for n, _ in nn)  # neighbours among the listed
    assert main(["embeddings", str(tmp_path / "run")]) == 0
    assert f"the 100 most frequent of {len(vocab):,} characters" in capsys.readouterr().out
    assert main(["embeddings", str(tmp_path / "run"), "--all", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["neighbours"]) == set(vocab)


def test_projection_of_two_columns_is_the_table_itself():
    C = np.random.default_rng(0).normal(size=(27, 2))
    xy, share, shares = embedding_projection(C)
    assert np.array_equal(xy, C) and share == 1.0 and sum(shares) == pytest.approx(1.0)
    # PCA coordinates keep the pairwise distances of a rank-2 table
    C10 = C @ np.random.default_rng(1).normal(size=(2, 10))
    xy, share, _ = embedding_projection(C10)
    d = lambda a: np.linalg.norm(a[:, None] - a[None], axis=-1)
    assert share == pytest.approx(1.0) and np.allclose(d(xy), d(C10))


def test_nearest_neighbours_against_brute_force():
    C = np.random.default_rng(3).normal(size=(12, 5))
    for metric, dist in [("euclidean", lambda a, b: np.linalg.norm(a - b)),
                         ("cosine", lambda a, b: 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b))]:
        got = nearest_neighbours(C, 3, metric)
        for i in range(12):
            expected = sorted((dist(C[i], C[j]), j) for j in range(12) if j != i)[:3]
            assert [j for j, _ in got[i]] == [j for _, j in expected]
            assert [d for _, d in got[i]] == pytest.approx([d for d, _ in expected])


def test_nearest_neighbours_in_blocks_equal_the_whole_table():
    """A vocabulary of thousands is done a block of rows at a time: the same neighbours, ties
    (repeated rows) by index, as one sort of the whole distance table."""
    rng = np.random.default_rng(0)
    C = rng.normal(size=(300, 4)).round(1)
    C[50:60] = C[7]  # ties
    for metric in ("euclidean", "cosine"):
        unit = C / np.linalg.norm(C, axis=1, keepdims=True)
        table = (np.linalg.norm(C[:, None] - C[None], axis=-1) if metric == "euclidean" else 1 - unit @ unit.T)
        np.fill_diagonal(table, np.inf)
        got = nearest_neighbours(C, 5, metric, rows=64)
        for i in range(len(C)):
            expected = np.argsort(table[i].round(9), kind="stable")[:5]
            assert [j for j, _ in got[i]] == expected.tolist()
            assert [d for _, d in got[i]] == pytest.approx(table[i][expected], abs=1e-6)
    assert nearest_neighbours(C[:1], 3) == [[]]


def test_a_big_vocabulary_writes_its_most_frequent_characters():
    from makemore.plots import written_characters

    assert written_characters(5, most=10).tolist() == [0, 1, 2, 3, 4]
    counts = np.array([50, 1, 9, 3, 7, 9, 0])
    assert written_characters(7, counts, most=4).tolist() == [0, 2, 4, 5]  # the boundary, then 9, 9, 7
    assert written_characters(7, None, most=3).tolist() == [0, 1, 2]


def test_characters_the_fonts_lack_are_one_note(tmp_path, capsys):
    import warnings

    from makemore.plots import plot_embeddings

    xy = np.random.default_rng(0).normal(size=(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning per glyph would fail here
        plot_embeddings(xy, ".a\ud55c\uae00", tmp_path / "e.png", "t", "x", "y")  # Hangul: not in DejaVu
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 characters with no glyph" in err
    assert_png(tmp_path / "e.png")


def test_plot_writes_loss_png(runs, capsys):
    run = runs[10]
    assert main(["plot", str(run)]) == 0
    assert str(run / "loss.png") in capsys.readouterr().out
    assert_png(run / "loss.png")


def test_plot_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code = main(["plot", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "not a makemore run directory" in err[0]


def test_plot_says_what_a_folder_or_an_unreadable_metrics_file_is(runs, tmp_path, capsys):
    sweep_dir, study, damaged = tmp_path / "sweep", tmp_path / "study", tmp_path / "damaged"
    for folder, marker in ((sweep_dir, "sweep.json"), (study, "tune.json")):
        folder.mkdir()
        (folder / marker).write_text("{}")
    shutil.copytree(runs[10], damaged)
    (damaged / "metrics.csv").write_bytes(b"step,train_loss,dev_loss,lr,seconds\n\xff\xfe")
    # another run's vocabulary: named as the mismatch, as every other command names it
    other_vocab = tmp_path / "other-vocab"
    shutil.copytree(runs[10], other_vocab)
    (other_vocab / "vocab.json").write_text('{"chars": ".ab"}')
    for folder, expected in ((sweep_dir, "is a sweep's folder"), (study, "tuning study's folder"),
                             (damaged, "cannot be read: not UTF-8 text (a bad byte at offset"),
                             (other_vocab, "vocab.json has 3 characters, config.json says")):
        assert main(["plot", str(folder)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_embeddings_command_in_a_fresh_process_without_a_display(runs, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    png = tmp_path / "e.png"
    proc = subprocess.run([sys.executable, "-m", "makemore", "embeddings", str(runs[2]), "--out", str(png)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {png}" in proc.stdout and proc.stderr == ""
    assert_png(png)


def test_budget_plot_draws_trials_recipes_and_count_models(tmp_path):
    from makemore.plots import plot_budget

    trials = [{"seconds": 10, "dev_loss": 2.2}, {"seconds": 10, "dev_loss": 2.1}, {"seconds": 60, "dev_loss": 2.0}]
    recipes = [{"seconds": 10, "dev_loss": 2.1}, {"seconds": 60, "dev_loss": 2.0}]
    counts = [{"label": f"KN {k}", "context": k, "seconds": 0.05 * k, "dev_loss": 2.5 - 0.1 * k} for k in range(1, 7)]
    spread = {"median": 1.95, "min": 1.94, "max": 1.96}
    fresh = [{"seconds": 10, "dev_loss": {"median": 2.08, "min": 2.07, "max": 2.09}, "mix_dev_loss": spread}]
    out = plot_budget(trials, recipes, counts, tmp_path / "budget.png", "title", "subtitle",
                      runs=[{"label": "--preset fast", "seconds": 0.6, "dev_loss": 2.16}])
    image = Image.open(out)
    assert image.size == (700, 450)
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 10  # drawn, not blank
    purple = np.array([148, 103, 189])  # tab:purple, the mixture's budget runs
    assert not (pixels == purple).all(axis=1).any()
    with_runs = np.asarray(Image.open(plot_budget(trials, recipes, counts, tmp_path / "b2.png", "t", "s",
                                                  budget_runs=fresh)).convert("RGB")).reshape(-1, 3)
    assert (with_runs == purple).all(axis=1).sum() > 20
