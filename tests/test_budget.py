"""Training for a time budget (budget.py): the plan against a simulated clock, and real runs
that must end within 10% of their budget with their schedule completed."""

import json
from dataclasses import replace

import pytest

from makemore import recipes
from makemore.budget import MAX_EVALS, MIN_BUDGET, TARGET_SHARE, Plan, parse_seconds
from makemore.cli import main
from makemore.config import make_configs
from makemore.data import load_corpus
from makemore.errors import UserError
from makemore.batches import lr_at
from makemore.fit import train


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("2m", 120), ("1h", 3600), ("1m30s", 90),
                                           ("0.5", 0.5), (12, 12)])
def test_durations(text, seconds):
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "2x", "-1", "1d", "m", "-0.5s"])
def test_bad_durations_are_user_errors(text):
    with pytest.raises(UserError):
        parse_seconds(text)


def test_a_budget_of_zero_means_train_the_steps():
    """--help says `--budget 0` trains --steps: it parses, and it overrides a preset's budget."""
    from makemore.config import make_configs

    assert parse_seconds("0") == 0.0 == parse_seconds("0s")
    _, cfg = make_configs("best", budget=0.0)
    assert cfg.budget == 0 and cfg.steps == make_configs("best")[1].steps


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


@pytest.mark.parametrize("budget", ["0.01", "0.5"])
def test_a_budget_too_small_is_one_error_line_and_leaves_nothing(words_file, tmp_path, capsys, budget):
    # refused on every machine: on a fast one, a 0.01-s budget once held one dev evaluation of this
    # tiny file and wrote a run of zero steps (Plan.check_feasible alone depends on the machine)
    out = tmp_path / "run"
    code = main(["train", "--data", str(words_file), "--preset", "default", "--budget", budget, "--out", str(out),
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "too small" in err[0], err
    assert not out.exists()


def test_the_minimum_budget_holds_for_configs_and_studies():
    with pytest.raises(UserError, match="too small"):
        make_configs("fast", vocab_size=27, budget=0.5)
    make_configs("fast", vocab_size=27, budget=MIN_BUDGET)  # the floor itself is allowed


def test_budget_flag_takes_durations_and_resume_continues_the_plan(words_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--preset", "fast", "--budget", "0m3s", "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget"] == 3.0 and summary["steps"] == summary["planned_steps"]
    capsys.readouterr()
    code = main(["train", "--resume", str(out), "--quiet"])  # already finished its planned steps
    assert code == 1 and "already finished" in capsys.readouterr().err


@pytest.mark.parametrize("one, two, chosen", [(0.002, 0.003, 1), (0.05, 0.03, 2)])
def test_the_thread_trial_keeps_the_faster_thread_count(one, two, chosen):
    from makemore.budget import TRIAL_STEPS, ThreadTrial

    trial, now, asked = ThreadTrial(2, budget=1.0), 0.0, []  # 10 ms of each
    asked.append(trial.tick(now))
    while not trial.done:
        step = one if trial.phase == 0 else two
        now += 5 * step if len(trial.step_times[trial.phase]) == 0 else step  # a slow first step after a switch
        threads = trial.tick(now)
        if threads is not None:
            asked.append(threads)
    assert asked == [1, 2, chosen]
    assert all(len(t) >= TRIAL_STEPS for t in trial.step_times)
    assert trial.summary()["thread_trial_step_ms"] == {"1": pytest.approx(1000 * one), "2": pytest.approx(1000 * two)}


def test_a_budget_run_on_default_threads_records_the_count_it_chose(corpus, tmp_path):
    import torch

    model_cfg, train_cfg = make_configs("fast", vocab_size=corpus.vocab.size, budget=2.0)
    caller = torch.get_num_threads()
    torch.set_num_threads(2)  # a trial needs two options, whatever this machine's default
    try:
        s = train(corpus, model_cfg, train_cfg, progress=False).summary
        assert torch.get_num_threads() == 2  # the caller's setting, as it was
        assert s["threads"] in (1, 2) and set(s["thread_trial_step_ms"]) == {"1", "2"}
        fixed = train(corpus, model_cfg, replace(train_cfg, threads=1), progress=False).summary
        assert "threads" not in fixed  # asked for: no trial
    finally:
        torch.set_num_threads(caller)


# --- recipes: which settings a budget run without --preset trains -----------------------------

TABLE = {"machine": "test machine", "date": "2026-01-01", "recipes": [
    {"budget": 10, "model": "mlp", "preset": "fast", "dev_loss": 2.1, "train_examples": 1000,
     "settings": {"hidden": 64, "dropout": 0.2}},
    {"budget": 60, "model": "mlp", "preset": "default", "dev_loss": 2.0, "train_examples": 1000,
     "settings": {"hidden": 96, "dropout": 0.3, "weight_decay": 0.1}},
]}


@pytest.mark.parametrize("budget, hidden", [(5, 64), (10, 64), (59, 64), (60, 96), (3600, 96)])
def test_the_recipe_of_the_largest_budget_covered(budget, hidden):
    from makemore.recipes import choose

    assert choose(budget, table=TABLE)["settings"]["hidden"] == hidden


def test_recipes_scale_regularisation_down_on_larger_data_only():
    from makemore.recipes import budget_configs, scaled_settings

    recipe = TABLE["recipes"][1]
    assert scaled_settings(recipe, 500) == recipe["settings"]  # smaller data: as tuned
    big = scaled_settings(recipe, 4000)
    assert big["dropout"] == pytest.approx(0.3 / 4) and big["weight_decay"] == pytest.approx(0.1 / 4)
    model_cfg, train_cfg, chosen = budget_configs(90, vocab_size=30, train_examples=4000, table=TABLE, lr=0.01)
    assert model_cfg.hidden == 96 and model_cfg.dropout == pytest.approx(0.075) and train_cfg.lr == 0.01
    assert train_cfg.budget == 90 and chosen["budget"] == 60 and chosen["machine"] == "test machine"
    # a dropout scaled (or tuned) below MIN_DROPOUT is none; weight decay keeps its scaled value
    assert scaled_settings(recipe, 40_000)["dropout"] == 0.0
    assert scaled_settings(recipe, 40_000)["weight_decay"] == pytest.approx(0.1 / 40)
    assert scaled_settings({**recipe, "settings": {**recipe["settings"], "dropout": 0.005}}, 500)["dropout"] == 0.0


def test_direct_connections_are_dropped_where_a_big_vocabulary_makes_them_most_of_the_model():
    from makemore.recipes import scaled_settings

    # the 10-second recipe of names: 9 x 33 inputs, one layer of 74, direct connections
    recipe = {"budget": 10, "model": "mlp", "preset": "default",
              "settings": {"block_size": 9, "emb_dim": 33, "hidden": 74, "layers": 1, "direct": True}}
    full = {**recipe, "settings": {**recipe["settings"], "softmax": "full"}}
    assert scaled_settings(recipe, 1000, vocab_size=27)["direct"] is True  # 8,019 of 32,987
    assert scaled_settings(full, 1000, vocab_size=3652)["direct"] is False  # 1.08M of 1.4M
    # softmax auto takes the adaptive softmax there: the direct connections feed its head alone
    assert scaled_settings(recipe, 1000, vocab_size=3652)["direct"] is True  # 19,899 of 232,572
    assert scaled_settings(recipe, 1000)["direct"] is True  # vocabulary unknown: as tuned
    # the 10-second recipe of 2026-11-23: 12 x 22 inputs, one layer of 293
    recipe = {**recipe, "settings": {"block_size": 12, "emb_dim": 22, "hidden": 293, "layers": 1, "direct": True}}
    full = {**recipe, "settings": {**recipe["settings"], "softmax": "full"}}
    assert scaled_settings(recipe, 1000, vocab_size=27)["direct"] is True  # 7,128 of 93,305
    assert scaled_settings(full, 1000, vocab_size=3653)["direct"] is False  # 964k of 2.2M


def test_recipes_are_chosen_by_the_vocabulary_they_were_tuned_on():
    from makemore.recipes import budget_configs, choose

    big = {"vocab_size": 3653, "train_examples": 5_000_000}
    table = {**TABLE, "recipes": TABLE["recipes"] + [
        {**big, "budget": 10, "model": "mlp", "preset": "fast", "dev_loss": 2.6, "settings": {"hidden": 80}},
        {**big, "budget": 120, "model": "mlp", "preset": "fast", "dev_loss": 2.2, "settings": {"hidden": 200}}]}
    # names' recipes (no vocab_size: 27) for small vocabularies, the big list's for large ones
    assert choose(60, table=table, vocab_size=27)["settings"]["hidden"] == 96
    assert choose(60, table=table, vocab_size=120)["settings"]["hidden"] == 96  # nearer 27 than 3653 by ratio
    assert choose(60, table=table, vocab_size=1000)["settings"]["hidden"] == 80
    assert choose(600, table=table, vocab_size=3000)["settings"]["hidden"] == 200
    assert choose(5, table=table, vocab_size=3000)["settings"]["hidden"] == 80  # below all: the smallest
    # a big-list recipe is scaled against the examples it was tuned on, not names'
    model_cfg, _, chosen = budget_configs(20, vocab_size=3653, train_examples=5_000_000, table=table)
    assert model_cfg.hidden == 80 and chosen["dev_loss"] == 2.6


def test_a_model_without_a_recipe_trains_its_own_preset_for_the_budget():
    from makemore.recipes import budget_configs, choose

    assert choose(60, model="bigram", table=TABLE) is None
    model_cfg, train_cfg, recipe = budget_configs(60, vocab_size=30, train_examples=10, model="mlp",
                                                  table={"recipes": []})
    assert recipe is None and train_cfg.budget == 60 and model_cfg.hidden == 768  # mlp's own `default`


# --- a budget run's mixture with a Kneser-Ney model ------------------------------------------

SMALL_TABLE = {"machine": "test machine", "date": "2026-01-01", "recipes": [
    {"budget": 1, "model": "mlp", "preset": "fast", "dev_loss": 2.1, "train_examples": 1000,
     "settings": {"hidden": 32, "threads": 1}}]}


@pytest.fixture
def small_recipes(monkeypatch):
    from makemore import recipes

    monkeypatch.setattr(recipes, "load", lambda: SMALL_TABLE)


def test_a_budget_run_mixes_its_model_with_kneser_ney_inside_the_budget(words_file, tmp_path, capsys, small_recipes):
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--budget", "3", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    mix = json.loads((out / "mix.json").read_text())
    assert summary["mix"] == mix and summary["budget_requested"] == 3.0
    # the counting and the teacher's targets are part of the budget: the loop gets what is left
    assert summary["budget"] == pytest.approx(3.0 - mix["count_seconds"] - summary["teacher_seconds"])
    assert mix["count_seconds"] > 0
    # the model is distilled from the count model it is mixed with
    assert json.loads((out / "config.json").read_text())["train"]["teacher"] == recipes.TEACHER_WEIGHT
    assert summary["seconds"] + mix["count_seconds"] <= 1.1 * 3.0
    assert mix["mlp_dev_loss"] == pytest.approx(summary["dev_loss"], abs=1e-6)
    # the weight is fitted on dev: the mixture is no worse than either of its parts there
    assert mix["mix_dev_loss"] <= min(mix["mlp_dev_loss"], mix["ngram_dev_loss"]) + 1e-9
    assert "mixture     dev" in printed and "--neural" in printed  # the mixture is the result; --neural the model
    assert main(["eval", str(out), "--mix", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(mix["mix_dev_loss"], abs=1e-6)


def test_a_budget_run_stopped_before_its_mixture_is_mixed_when_resumed(words_file, tmp_path, small_recipes):
    """Ctrl-C during a budget run stops it before its mixture; --resume ends it as the run would
    have ended: mixed with its count model, its recipe and counting kept in summary.json."""
    from makemore.data import load_corpus
    from makemore.fit import resume, train

    def interrupt(row):
        if row["step"] > 0:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    first = train(load_corpus(str(words_file)), budget=3, out=out, progress=False, callbacks=(interrupt,))
    assert first.status == "interrupted" and not (out / "mix.json").exists()
    assert json.loads((out / "summary.json").read_text())["mixes"] is True
    resumed = resume(out, progress=False)
    assert resumed.status == "completed"
    summary = json.loads((out / "summary.json").read_text())
    mix = json.loads((out / "mix.json").read_text())
    assert summary["mix"] == mix == resumed.summary["mix"] and summary["result"] == resumed.summary["result"]
    assert mix["mlp_dev_loss"] == pytest.approx(summary["dev_loss"], abs=1e-6)
    assert summary["result"]["dev_loss"] <= min(mix["mlp_dev_loss"], mix["ngram_dev_loss"]) + 1e-9
    assert summary["recipe"] == first.summary["recipe"] and summary["budget_requested"] == 3.0


def test_a_budget_run_of_a_model_without_a_recipe_is_mixed_too(words_file, tmp_path, capsys, small_recipes):
    out = tmp_path / "run"  # the small table knows the MLP only: the bigram trains its own preset
    assert main(["train", "--data", str(words_file), "--budget", "2", "--model", "bigram", "--out", str(out),
                 "--quiet"]) == 0
    assert "no time-budget recipe is known for --model bigram" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mix"]["count_seconds"] > 0 and summary["budget_requested"] == 2.0
    assert summary["result"]["dev_loss"] <= summary["mix"]["ngram_dev_loss"] + 1e-9  # never worse than counting


def test_no_mix_and_presets_train_the_model_alone(words_file, tmp_path, capsys, small_recipes):
    alone = tmp_path / "alone"
    assert main(["train", "--data", str(words_file), "--budget", "2", "--no-mix", "--out", str(alone), "--quiet"]) == 0
    preset = tmp_path / "preset"
    assert main(["train", "--data", str(words_file), "--budget", "2", "--preset", "fast", "--threads", "1",
                 "--out", str(preset), "--quiet"]) == 0
    for run in (alone, preset):
        assert not (run / "mix.json").exists() and "mix" not in json.loads((run / "summary.json").read_text())
    assert "mixture" not in capsys.readouterr().out


def test_no_mix_counts_only_for_a_teacher_that_fits(words_file, tmp_path, small_recipes, monkeypatch):
    from makemore import fit

    def summary(name):
        out = tmp_path / name
        assert main(["train", "--data", str(words_file), "--budget", "2", "--no-mix", "--out", str(out), "--quiet"]) == 0
        return json.loads((out / "summary.json").read_text())

    assert summary("teacher")["count_seconds"] > 0  # counted for the recipe's teacher
    monkeypatch.setattr(fit, "TEACHER_MAX_BYTES", 0)  # as on a vocabulary of thousands
    alone = summary("alone")
    assert "count_seconds" not in alone and alone["budget"] == 2.0


def test_a_budget_too_short_to_count_trains_the_model_alone_with_a_note(words_file, tmp_path, capsys,
                                                                         small_recipes, monkeypatch):
    from makemore import fit

    monkeypatch.setattr(fit, "estimate_fit_seconds", lambda corpus, context: 600.0)  # counting "would take" minutes
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--budget", "2", "--out", str(out), "--quiet"]) == 0
    assert "trained alone" in capsys.readouterr().err
    assert not (out / "mix.json").exists()
    assert json.loads((out / "summary.json").read_text())["budget"] == 2.0


def test_a_seed_ensemble_for_a_budget_is_mixed_as_one_model(words_file, tmp_path, capsys, small_recipes):
    out = tmp_path / "ens"
    assert main(["train", "--data", str(words_file), "--budget", "3", "--seeds", "2", "--out", str(out),
                 "--quiet"]) == 0
    mix = json.loads((out / "mix.json").read_text())
    assert mix["mix_dev_loss"] <= min(mix["mlp_dev_loss"], mix["ngram_dev_loss"]) + 1e-9
    assert "mixture     dev" in capsys.readouterr().out
    assert main(["sample", str(out), "--mix", "-n", "3"]) == 0


def test_a_budget_run_distils_from_kneser_ney_where_it_is_counted_in_time_and_fits():
    from makemore.recipes import TEACHER_WEIGHT, budget_configs

    _, train_cfg, _ = budget_configs(60, vocab_size=27, train_examples=200_000, table=TABLE)
    assert train_cfg.teacher == TEACHER_WEIGHT and train_cfg.teacher_context == 5
    _, train_cfg, _ = budget_configs(60, vocab_size=27, train_examples=200_000, table=TABLE, teacher=0.0)
    assert train_cfg.teacher == 0.0  # --teacher 0 turns it off
    # no time to count the teacher, or no memory to hold its targets (fit.allows_teacher): none
    assert budget_configs(60, vocab_size=27, train_examples=200_000, table=TABLE, teacher_allowed=False)[1].teacher == 0
    from makemore.fit import allows_teacher

    assert allows_teacher(200_000, 27, counted=True)
    assert not allows_teacher(5_000_000, 3652, counted=True)  # 73 GB of targets
    assert not allows_teacher(200_000, 27, counted=False)  # not counted in time


def test_a_recipe_tuned_with_the_teacher_keeps_its_weight_where_the_teacher_fits():
    from makemore.recipes import budget_configs

    tuned = {**TABLE, "recipes": [{**TABLE["recipes"][1], "settings": {"hidden": 96, "teacher": 0.7}}]}
    assert budget_configs(60, vocab_size=27, train_examples=200_000, table=tuned)[1].teacher == 0.7
    assert budget_configs(60, vocab_size=27, train_examples=200_000, table=tuned, teacher=0.2)[1].teacher == 0.2
    assert budget_configs(600, vocab_size=3652, train_examples=5_000_000, table=tuned,
                          teacher_allowed=False)[1].teacher == 0.0


@pytest.mark.parametrize("slow_eval", [1, 3, 6])
def test_one_slow_evaluation_does_not_end_the_plan_early(slow_eval):
    """A simulated clock: steps of 0.5 ms, dev estimates of 10 ms, one of which stalls for a
    second. The plan must still fill its budget: the estimate of an evaluation's time must not
    stay at the stalled one once the steps left were cut for it (a running mean did, and the
    run ended at 45-75% of its budget)."""
    budget, step_seconds, eval_seconds = 4.0, 0.0005, 0.01
    plan = Plan(budget, provisional_steps=1000)
    clock = eval_clock = 3 * eval_seconds  # the first estimate, at step 0, is a cold one
    plan.evaluated(clock)
    step, total, evals = 0, plan.total, 0
    while step < total:
        if plan.due(step, clock):
            plan.replan(step, clock, clock - eval_clock)
            total = plan.total
        assert not plan.over(clock)
        clock += step_seconds
        step += 1
        if step % plan.eval_every == 0 or step == total:
            evals += 1
            took = 1.0 if evals == slow_eval else eval_seconds
            clock, eval_clock = clock + took, eval_clock + took
            plan.evaluated(took)
    assert 0.95 * TARGET_SHARE * budget <= clock <= budget and evals > slow_eval


def test_final_figures_take_the_whole_splits_unless_they_would_take_more_than_their_share():
    from makemore.budget import FINAL_SHARE

    plan = Plan(100.0, 1000)
    assert plan.final_examples(1000, 10**6) == 0  # nothing measured yet: the whole splits
    plan.evaluated(30.0)  # with a slow checkpoint: not what the final figures cost
    assert plan.final_examples(1000, 10**6) == 0  # no estimate timed alone yet
    plan.estimated(1.0)  # an estimate over 1,000 examples: 1 ms an example
    allowed = FINAL_SHARE * 100.0
    assert plan.final_examples(1000, int(allowed / 1e-3)) == 0  # just fits: the whole splits
    assert plan.final_examples(1000, 10**6) == int(allowed / 1e-3 / 2)  # half the share each
    assert Plan(1.0, 1000).final_examples(1000, 10**6) == 0
    small = Plan(2.0, 1000)
    small.estimated(1.0)
    assert small.final_examples(1000, 10**6) == 1000  # never fewer than an estimate reads


def test_a_budget_run_whose_final_figures_would_overrun_reads_subsets_and_mixes_on_them(
        words_file, tmp_path, capsys, monkeypatch):
    """Where the whole splits would take more than FINAL_SHARE of the budget, the final train
    and dev losses are over fixed subsets, the summary and the printed lines say how many, and
    the mixture is fitted on the final dev subset's log-probabilities, with no pass of its own."""
    from makemore import budget, mixture

    monkeypatch.setattr(budget, "FINAL_SHARE", 1e-9)  # any final figure overruns
    passes = []
    real = mixture.target_log_probs
    monkeypatch.setattr(mixture, "target_log_probs", lambda *a, **k: passes.append(1) or real(*a, **k))
    out = tmp_path / "run"
    assert main(["train", "--data", str(words_file), "--budget", "3", "--eval-examples", "60",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    mix = json.loads((out / "mix.json").read_text())
    assert summary["final_examples"] == 60 and summary["dev_loss_examples"] == 60
    assert summary["train_loss_examples"] == 60
    assert mix["dev_examples"] == 60 and passes == []
    assert mix["mlp_dev_loss"] == pytest.approx(summary["dev_loss"], rel=1e-12)
    assert "on 60 dev examples" in printed and "mixture     dev" in printed
    # `makemore eval` scores the whole dev split
    assert main(["eval", str(out), "--neural", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] > 60
