"""Training for a time budget (budget.py): the plan against a simulated clock, and real runs
that must end within 10% of their budget with their schedule completed."""

import json

import pytest

from makemore.budget import MAX_EVALS, Plan, parse_seconds
from makemore.cli import main
from makemore.config import make_configs
from makemore.data import load_corpus
from makemore.errors import UserError
from makemore.train import lr_at, train


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("2m", 120), ("1h", 3600), ("1m30s", 90),
                                           ("0.5", 0.5), (12, 12)])
def test_durations(text, seconds):
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "2x", "-1", "0", "1d", "m"])
def test_bad_durations_are_user_errors(text):
    with pytest.raises(UserError):
        parse_seconds(text)


def simulate(budget, step_seconds, eval_seconds, provisional=10_000):
    """Drive a Plan as the training loop does, with a clock that advances by the given times
    (step_seconds(step) may change as the run goes: a machine that slows down)."""
    plan = Plan(budget, provisional)
    used, evals, step = eval_seconds, 1, 0  # the evaluation at step 0
    plan.evaluated(eval_seconds)
    plan.check_feasible()
    eval_time = eval_seconds
    while step < plan.total:
        if plan.due(step, used):
            plan.replan(step, used, used - eval_time)
        if plan.over(used):
            break
        used += step_seconds(step)
        step += 1
        if step % plan.eval_every == 0 or step == plan.total:
            used += eval_seconds
            eval_time += eval_seconds
            evals += 1
            plan.evaluated(eval_seconds)
    return plan, used, step, evals


@pytest.mark.parametrize("budget", [10, 60, 300])
def test_a_steady_machine_fills_the_budget_and_completes_the_schedule(budget):
    plan, used, step, evals = simulate(budget, lambda s: 0.004, eval_seconds=0.2)
    assert step == plan.total and not plan.stopped_early
    assert 0.9 * budget <= used <= 1.1 * budget
    assert evals <= MAX_EVALS + 2 and (evals - 2) * 0.2 <= 0.1 * budget  # evaluations stay within ~10%


def test_a_fast_model_plans_before_its_provisional_schedule_ends():
    """5,500 provisional steps of 0.45 ms take 2.5 s, less than the 3% of a 300 s budget the plan
    waits for: the plan must still be made, not the provisional schedule run to its end."""
    plan, used, step, _ = simulate(300, lambda s: 0.00045, eval_seconds=0.05, provisional=5_500)
    assert plan.calibrated and step == plan.total > 100 * 5_500
    assert 0.9 * 300 <= used <= 300


def test_a_machine_that_slows_down_moves_the_end_of_the_schedule():
    plan, used, step, _ = simulate(60, lambda s: 0.004 if s < 3000 else 0.008, eval_seconds=0.2)
    assert step == plan.total and not plan.stopped_early and 54 <= used <= 60
    steady, *_ = simulate(60, lambda s: 0.004, eval_seconds=0.2)
    assert plan.total < steady.total  # fewer steps planned once each took longer


def test_the_last_guard_stops_at_the_budget():
    plan = Plan(10, 1000)
    plan.evaluated(0.1)
    assert not plan.over(9.9) and plan.over(10.0) and plan.summary()["budget_stopped_early"]


def test_a_budget_too_small_for_two_evaluations_says_so():
    plan = Plan(1.0, 1000)
    plan.evaluated(0.8)
    with pytest.raises(UserError, match="too small here"):
        plan.check_feasible()


@pytest.fixture
def corpus(words_file):
    return load_corpus(words_file)


def test_a_budget_run_ends_within_ten_percent_with_its_schedule_complete(corpus, tmp_path):
    budget = 4.0
    # one thread: on a loaded machine, OpenMP threads that wait on each other make step times erratic
    model_cfg, train_cfg = make_configs("fast", vocab_size=corpus.vocab.size, budget=budget, steps=1000, threads=1)
    result = train(corpus, model_cfg, train_cfg, out=tmp_path / "run", progress=False)
    s = result.summary
    assert s["budget"] == budget and not s["budget_stopped_early"]
    assert 0.9 * budget <= s["seconds"] <= 1.1 * budget, s["seconds"]
    assert s["steps"] == s["planned_steps"] != 1000  # planned from the step time, not the preset's steps
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    last = dict(zip(lines[0].split(","), lines[-1].split(",")))
    steps = s["steps"]
    assert int(last["step"]) == steps  # the cosine schedule ran to its planned end
    assert float(last["lr"]) == pytest.approx(lr_at(train_cfg, steps - 1, steps), rel=1e-6)
    assert float(last["lr"]) < 0.01 * train_cfg.lr


def test_a_budget_too_small_is_one_error_line_and_leaves_nothing(words_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(words_file), "--preset", "default", "--budget", "0.01", "--out", str(out),
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "too small" in err[0], err
    assert not out.exists()


def test_budget_flag_takes_durations_and_resume_continues_the_plan(words_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--preset", "fast", "--budget", "0m3s", "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget"] == 3.0 and summary["steps"] == summary["planned_steps"]
    capsys.readouterr()
    code = main(["train", "--resume", str(out), "--quiet"])  # already finished its planned steps
    assert code == 1 and "already finished" in capsys.readouterr().err


# --- recipes: which settings a budget run without --preset trains -----------------------------

TABLE = {"machine": "test machine", "date": "2026-01-01", "data": "names", "train_examples": 1000, "recipes": [
    {"budget": 10, "model": "mlp", "preset": "fast", "dev_loss": 2.1, "settings": {"hidden": 64, "dropout": 0.2}},
    {"budget": 60, "model": "mlp", "preset": "default", "dev_loss": 2.0,
     "settings": {"hidden": 96, "dropout": 0.3, "weight_decay": 0.1}},
]}


@pytest.mark.parametrize("budget, hidden", [(5, 64), (10, 64), (59, 64), (60, 96), (3600, 96)])
def test_the_recipe_of_the_largest_budget_covered(budget, hidden):
    from makemore.recipes import choose

    assert choose(budget, table=TABLE)["settings"]["hidden"] == hidden


def test_recipes_scale_regularisation_down_on_larger_data_only():
    from makemore.recipes import budget_configs, scaled_settings

    recipe = TABLE["recipes"][1]
    assert scaled_settings(recipe, 500, TABLE) == recipe["settings"]  # smaller data: as tuned
    big = scaled_settings(recipe, 4000, TABLE)
    assert big["dropout"] == pytest.approx(0.3 / 4) and big["weight_decay"] == pytest.approx(0.1 / 4)
    model_cfg, train_cfg, chosen = budget_configs(90, vocab_size=30, train_examples=4000, table=TABLE, lr=0.01)
    assert model_cfg.hidden == 96 and model_cfg.dropout == pytest.approx(0.075) and train_cfg.lr == 0.01
    assert train_cfg.budget == 90 and chosen["budget"] == 60 and chosen["machine"] == "test machine"


def test_a_model_without_a_recipe_trains_its_own_preset_for_the_budget():
    from makemore.recipes import budget_configs, choose

    assert choose(60, model="bigram", table=TABLE) is None
    model_cfg, train_cfg, recipe = budget_configs(60, vocab_size=30, train_examples=10, model="mlp",
                                                  table={"recipes": []})
    assert recipe is None and train_cfg.budget == 60 and model_cfg.hidden == 768  # mlp's own `default`
