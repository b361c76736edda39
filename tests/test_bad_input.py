"""Every command with each class of bad input (issue 29): a non-zero exit, one line on stderr,
no traceback, nothing left behind, no hang. The cases are generated where they can be (every
command that writes, every numeric setting's declared range), so a new command or setting is
covered without a new test."""

import errno
import json
import os
import signal
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import make_words
from makemore import models
from makemore.cli import main
from makemore.devices import usable_cores
from makemore.config import TRAIN_FIELDS
from makemore.rundir import RunLock

TINY = ["--preset", "lecture", "--emb-dim", "4", "--hidden", "16", "--steps", "30", "--batch-size", "16", "--quiet"]
HANG = 120  # seconds after which a command counts as hung


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data file, two runs on it, a run on other data, and a plain file."""
    tmp = tmp_path_factory.mktemp("bad")
    data = tmp / "words.txt"
    data.write_text("\n".join(make_words()))
    other = tmp / "other.txt"
    other.write_text("\n".join(w.upper() for w in make_words(seed=3)))
    for name, source in (("run", data), ("run2", data), ("alien", other)):
        assert main(["train", "--data", str(source), "--out", str(tmp / name), *TINY]) == 0
    (tmp / "file.txt").write_text("not a folder")
    return tmp


@contextmanager
def no_hang(seconds: int = HANG):
    def hung(signum, frame):
        raise TimeoutError(f"the command did not end within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(folder: Path) -> dict:
    """Every path under `folder` with its size and modification time (a run's lock file only by
    name: every writer, refused or not, takes it)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            if p.is_file() and p.name != RunLock.NAME else None for p in sorted(folder.rglob("*"))}


def assert_one_line_and_nothing_left(argv: list[str], world: Path, capsys, expect: str = "") -> str:
    before = snapshot(world)
    capsys.readouterr()
    with no_hang():
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own one-line usage errors
            code = e.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code != 0, f"{argv} exited 0"
    assert len(lines) == 1 and lines[0].startswith("makemore"), captured.err
    assert "Traceback" not in captured.err
    assert expect in lines[0], lines[0]
    after = snapshot(world)
    assert after == before, f"{argv} left {set(after) ^ set(before) or 'changed files'}"
    return lines[0]


# ----------------------------------------------------------------------------------------
# Outputs: every command that writes, at a place it cannot


def writers(w: Path, out: str) -> dict[str, list[str]]:
    """Each command that writes an output, with OUT as its output."""
    data = str(w / "words.txt")
    return {
        "train": ["train", "--data", data, "--out", out, *TINY],
        "ensemble": ["ensemble", str(w / "run"), str(w / "run2"), "--out", out],
        "tune": ["tune", "--data", data, "--trials", "1", "--steps", "20", "--out", out],
        "lr-find": ["lr-find", "--data", data, "--preset", "lecture", "--steps", "20", "--out", out],
        "sweep": ["sweep", "--data", data, "--preset", "lecture", "--steps", "20", "--grid", "hidden=8,16", "--out", out],
        "plot": ["plot", str(w / "run"), "--out", out],
        "embeddings": ["embeddings", str(w / "run"), "--out", out],
    }


WRITERS = list(writers(Path("."), "x"))
FOLDER_OUTPUTS = ["train", "ensemble", "tune", "lr-find", "sweep"]


@pytest.mark.parametrize("command", WRITERS)
@pytest.mark.parametrize("place", ["unwritable", "inside a file"])
def test_an_output_that_cannot_be_written_is_one_line(world, capsys, command, place):
    out = "/proc/makemore-out/x" if place == "unwritable" else str(world / "file.txt" / "sub")
    assert_one_line_and_nothing_left(writers(world, out)[command], world, capsys)


@pytest.mark.parametrize("command", WRITERS)
def test_an_os_error_names_the_path_that_failed(world, capsys, command):
    """/proc exists: creating a file or folder in it fails (ENOENT); ensemble said "cannot create /proc"."""
    out = "/proc/makemore-out.png" if command in ("plot", "embeddings") else "/proc/makemore-out"
    line = assert_one_line_and_nothing_left(writers(world, out)[command], world, capsys)
    assert out in line and "no such file or directory" in line


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """A folder that reads as on a read-only mount (os.access and os.statvfs say so, as they would)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access, real_statvfs = os.access, os.statvfs

    def under(path) -> bool:
        return Path(path).resolve().is_relative_to(folder.resolve())

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if under(p) and mode & os.W_OK else
                        real_access(p, mode, **kw))
    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly() if under(p) else real_statvfs(p))
    return folder


@pytest.mark.parametrize("command", WRITERS)
def test_a_read_only_file_system_is_named_as_such(world, capsys, read_only, command):
    """Every command says what a write there would say (mix and plot met EROFS; ensemble, train and the
    other checked outputs said "permission denied")."""
    out = read_only / "sub" / ("x.png" if command in ("plot", "embeddings") else "x")
    line = assert_one_line_and_nothing_left(writers(world, str(out))[command], world, capsys)
    assert "read-only file system" in line and str(out) in line


@pytest.mark.parametrize("command", FOLDER_OUTPUTS)
def test_a_file_where_a_folder_is_wanted_is_one_line(world, capsys, command):
    line = assert_one_line_and_nothing_left(writers(world, str(world / "file.txt"))[command], world, capsys)
    assert "file" in line and "--resume" not in line  # not "the run already exists"


@pytest.mark.parametrize("command", ["plot", "embeddings"])
def test_a_folder_where_a_file_is_wanted_is_one_line(world, capsys, command):
    assert_one_line_and_nothing_left(writers(world, str(world / "run"))[command], world, capsys, "folder")


@pytest.mark.parametrize("command", ["train", "ensemble"])
def test_an_existing_folder_is_refused(world, capsys, command):
    assert_one_line_and_nothing_left(writers(world, str(world / "run2"))[command], world, capsys, "already exists")


@pytest.mark.parametrize("command", FOLDER_OUTPUTS)
@pytest.mark.parametrize("below", ["sub", "sub/deeper"])
def test_a_folder_inside_a_run_is_refused(world, capsys, command, below):
    """ensemble --out inside a member copied the run into itself without end (a name too long, or a
    RecursionError); train made a run inside a run, sweep, lr-find and tune wrote their files there."""
    out = world / "run" / below
    line = assert_one_line_and_nothing_left(writers(world, str(out))[command], world, capsys,
                                            f"is inside the training run {world / 'run'}")
    assert len(line) < 300


def test_a_folder_inside_a_run_through_a_symlink_is_refused(world, capsys, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(world / "run")
    assert_one_line_and_nothing_left(writers(world, str(link / "ens"))["ensemble"], world, capsys,
                                     "is inside the training run")


STORAGES = {
    "unwritable": lambda w: "sqlite:////proc/makemore-out/x.db",
    "inside a file": lambda w: f"sqlite:///{w / 'file.txt'}/x.db",
    "not a database": lambda w: f"sqlite:///{w / 'file.txt'}",
    "malformed": lambda w: "nosuch://x",
    "unreachable": lambda w: "postgresql://nobody:x@127.0.0.1:1/none",
}


@pytest.mark.parametrize("storage", list(STORAGES))
def test_a_study_storage_that_cannot_be_used_is_one_line(world, capsys, storage):
    """... and leaves no OUT/tune.json and no .lock beside the user's file."""
    argv = writers(world, str(world / "t"))["tune"] + ["--storage", STORAGES[storage](world)]
    assert_one_line_and_nothing_left(argv, world, capsys)


# ----------------------------------------------------------------------------------------
# A full disk: every atomic write fails as it would with no space left


@pytest.fixture
def full_disk(monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)  # outputs.atomic_write syncs every file it writes
    real_open = open

    def opening(file, mode="r", *args, **kwargs):  # metrics.csv is appended to
        if "a" in mode:
            no_space()
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", opening)


@pytest.mark.parametrize("command", WRITERS + ["resume", "mix"])
def test_a_full_disk_is_one_line_and_leaves_nothing(world, capsys, full_disk, command):
    out = str(world / "new")
    argv = {"resume": ["train", "--resume", str(world / "run"), "--steps", "60", "--quiet"],
            "mix": ["mix", str(world / "run")], **writers(world, out)}[command]
    if command in ("plot", "embeddings"):
        argv = argv[:-2]  # into the run's own folder, as by default
    line = assert_one_line_and_nothing_left(argv, world, capsys)
    assert "no space left" in line


def test_a_full_standard_output_is_one_line(world, capsys, monkeypatch):
    class Full:
        encoding, errors = "utf-8", "strict"

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

        def fileno(self):
            raise OSError(errno.EBADF, "no file")

    stdout = Full()
    stdout.buffer = Full()
    monkeypatch.setattr(sys, "stdout", stdout)
    for argv in (["sample", str(world / "run"), "-n", "50"], ["eval", str(world / "run"), "--json"]):
        line = assert_one_line_and_nothing_left(argv, world, capsys)
        assert "standard output" in line and "no space left" in line


# ----------------------------------------------------------------------------------------
# Settings: every numeric setting just outside the range its field declares


def out_of_range() -> list[tuple[str, str]]:
    """(flag, value) just outside each declared bound, for the training settings and every model's."""
    fields = {**{n: f for n, f in TRAIN_FIELDS.items() if n != "betas"},
              **{n: f for m in models.REGISTRY for n, f in models.config_fields(m).items()}}
    cases = []
    for name, f in fields.items():
        if isinstance(f.default, bool) or not isinstance(f.default, (int, float)):
            continue
        meta, flag = f.metadata, "--" + name.replace("_", "-")
        bound = lambda v: v() if callable(v) else v  # noqa: E731
        step = 1 if isinstance(f.default, int) else 0.5
        if "min" in meta:
            cases.append((flag, str(bound(meta["min"]) - step)))
        if "max" in meta:
            cases.append((flag, str(bound(meta["max"]) + step)))
        if "above" in meta:
            cases.append((flag, str(bound(meta["above"]))))
        if "below" in meta and bound(meta["below"]) != float("inf"):
            cases.append((flag, str(bound(meta["below"]))))
    return sorted(set(cases))


def test_every_numeric_setting_declares_its_range():
    cases = out_of_range()
    flags = {flag for flag, _ in cases}
    assert {"--steps", "--lr", "--eval-interval", "--warmup", "--decay-at", "--threads", "--hidden",
            "--emb-dim", "--block-size", "--dropout"} <= flags


@pytest.mark.parametrize("flag, value", out_of_range())
def test_a_setting_out_of_range_is_one_line(world, capsys, flag, value):
    """For whichever model has the setting: the error names it, before anything is written."""
    name = flag[2:].replace("-", "_")
    model = next((m for m in models.REGISTRY if name in models.config_fields(m)), "mlp")
    argv = ["train", "--data", str(world / "words.txt"), "--out", str(world / "new"), "--model", model,
            "--steps", "20", flag, value, "--quiet"]
    if flag == "--steps":
        argv = argv[:argv.index("--steps")] + argv[argv.index("--steps") + 2:]
    assert_one_line_and_nothing_left(argv, world, capsys, flag[2:])


@pytest.mark.parametrize("argv, expect", [
    (["--block-size", "100000"], "more context than this data has"),
    (["--threads", "100000"], "threads"),
    (["--nproc", "0"], "--nproc must be at least 1"),
    (["--nproc", "-3"], "--nproc must be at least 1"),
    (["--nproc", "4096"], "cores"),
    (["--nproc", "2", "--threads", "2"], "threads on"),
])
def test_what_the_machine_or_the_data_cannot_hold_is_refused_first(world, capsys, argv, expect):
    if "--threads" in argv and usable_cores() > 2:
        pytest.skip("four threads fit this machine's cores")
    base = ["train", "--data", str(world / "words.txt"), "--out", str(world / "new"), *TINY]
    assert_one_line_and_nothing_left(base + argv, world, capsys, expect)


@pytest.mark.parametrize("command", [["sweep", "--grid", "hidden=8", "--steps", "5"], ["lr-find", "--steps", "5"],
                                     ["tune", "--trials", "1", "--steps", "50"]])
def test_a_commands_folder_is_never_a_training_runs(world, capsys, command):
    """sweep, lr-find and tune wrote their files into a finished run's directory (train refuses it)."""
    argv = [command[0], "--data", str(world / "words.txt"), *command[1:], "--out", str(world / "run")]
    assert_one_line_and_nothing_left(argv, world, capsys, "is a training run's directory")


def test_a_budget_with_several_workers_is_refused_before_any_starts(world, capsys):
    if usable_cores() < 2:
        pytest.skip("--nproc 2 needs two cores")
    argv = ["train", "--data", str(world / "words.txt"), "--out", str(world / "new"), "--budget", "5", "--nproc", "2"]
    line = assert_one_line_and_nothing_left(argv, world, capsys, "--budget is not supported with several workers")
    assert "give --steps" in line


# ----------------------------------------------------------------------------------------
# Flags that cannot apply, a second writer, and messages that say what happened


@pytest.mark.parametrize("flag", [["--hidden", "999"], ["--preset", "fast"], ["--model", "gru"], ["--lr", "0.5"]])
def test_a_flag_resume_cannot_apply_is_an_error(world, capsys, flag):
    argv = ["train", "--resume", str(world / "run"), "--steps", "60", *flag]
    assert_one_line_and_nothing_left(argv, world, capsys, "cannot apply to --resume")


@pytest.mark.parametrize("command", ["resume", "mix"])
def test_a_second_writer_is_refused_with_the_holders_pid(world, capsys, command):
    argv = {"resume": ["train", "--resume", str(world / "run"), "--steps", "60", "--quiet"],
            "mix": ["mix", str(world / "run")]}[command]
    with RunLock(world / "run"):
        assert_one_line_and_nothing_left(argv, world, capsys, f"pid {os.getpid()}")
    capsys.readouterr()
    assert main(["eval", str(world / "run")]) == 0  # readers never take the lock


def test_a_member_still_training_is_refused_by_ensemble(world, capsys):
    """ensemble copied a mid-training snapshot without a word, where mix and --resume are refused."""
    argv = ["ensemble", str(world / "run"), str(world / "run2"), "--out", str(world / "new")]
    with RunLock(world / "run2"):
        line = assert_one_line_and_nothing_left(argv, world, capsys, f"{world / 'run2'} is training now")
    assert f"pid {os.getpid()}" in line and "wait" in line and "stop it" in line


def test_a_member_killed_before_its_end_joins_as_eval_uses_it(world, capsys, tmp_path):
    """No summary.json and no process training it: its best checkpoint, as eval and sample read it."""
    import shutil

    killed = tmp_path / "killed"
    shutil.copytree(world / "run2", killed)
    (killed / "summary.json").unlink()
    assert main(["eval", str(killed)]) == 0
    assert main(["ensemble", str(world / "run"), str(killed), "--out", str(tmp_path / "ens")]) == 0
    assert main(["eval", str(tmp_path / "ens")]) == 0


@pytest.mark.parametrize("argv, expect", [
    (["eval", "FILE"], "is a file, not a run directory"),
    (["ensemble", "RUN", "RUN", "--out", "NEW"], "given twice"),
    (["ensemble", "RUN", "ALIEN", "--out", "NEW"], "another vocabulary"),
    (["train", "--resume", "RUN", "--steps", "10"], "is at step 30 already"),
])
def test_messages_say_what_happened(world, capsys, argv, expect):
    names = {"FILE": world / "file.txt", "RUN": world / "run", "ALIEN": world / "alien", "NEW": world / "new"}
    argv = [str(names.get(a, a)) for a in argv]
    assert_one_line_and_nothing_left(argv, world, capsys, expect)


def test_an_ensemble_of_runs_given_for_one_run_names_its_members(world, capsys, tmp_path):
    """Not "a seed ensemble ... the seed-* folders in it": its members are named after the runs."""
    ens = tmp_path / "ens"
    assert main(["ensemble", str(world / "run"), str(world / "run2"), "--out", str(ens)]) == 0
    for argv in (["plot", str(ens)], ["embeddings", str(ens)], ["ensemble", str(world / "alien"), str(ens), "--out",
                 str(tmp_path / "e")], ["ngram", "--data", str(world / "words.txt"), "--compare", str(ens)]):
        line = assert_one_line_and_nothing_left(argv, world, capsys, f"{ens} is an ensemble of runs")
        assert "(run, run2)" in line and "seed" not in line and "mix and serve" in line, line


def test_a_file_with_lone_cr_line_ends_is_read_as_lines(tmp_path, capsys):
    data = tmp_path / "mac.txt"
    data.write_bytes("\r".join(make_words()).encode())
    assert main(["data", "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["words"] == len(make_words())


# ----------------------------------------------------------------------------------------
# Two writers racing on one run


def test_two_writers_on_one_run_one_proceeds_and_each_step_is_logged_once(world, tmp_path):
    """A resume of a run that another process is still training: exactly one of them writes."""
    run = tmp_path / "race"
    data = str(world / "words.txt")
    assert main(["train", "--data", data, "--out", str(run), *TINY, "--eval-interval", "100"]) == 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "makemore", "train", "--resume", str(run), "--steps", "10000000", "--quiet"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:  # wait until it holds the lock
        try:
            holder = (run / RunLock.NAME).read_text().strip()
        except OSError:
            holder = ""
        if holder == str(first.pid):
            break
        time.sleep(0.05)
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=HANG)
    first.send_signal(signal.SIGINT)  # it saves where it is and stops
    out, err = first.communicate(timeout=HANG)
    assert first.returncode == 130, err
    assert second.returncode == 1 and len(second.stderr.strip().splitlines()) == 1
    assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    steps = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] > 30  # each step once, in order: one writer


# ----------------------------------------------------------------------------------------
# Found by trying the tool as a new user (2026-12-07)


def test_a_batch_too_big_for_the_data_or_the_memory_is_one_line(world, capsys, monkeypatch):
    from makemore import counts

    data = str(world / "words.txt")
    argv = ["train", "--data", data, "--out", str(world / "new"), *TINY]
    line = assert_one_line_and_nothing_left(argv + ["--batch-size", "10000000"], world, capsys, "training examples")
    assert "--batch-size" in line
    monkeypatch.setattr(counts, "available_memory", lambda: 1 << 10)  # 1 KiB free: no step fits
    assert_one_line_and_nothing_left(argv + ["--batch-size", "512"], world, capsys, "GiB available")


def test_running_out_of_memory_is_one_line_and_leaves_no_run(world, capsys, monkeypatch):
    from makemore import engines

    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 28.6 GiB for an array with shape (769, 10000000)")

    monkeypatch.setattr(engines.AutogradEngine, "step", out_of_memory)
    argv = ["train", "--data", str(world / "words.txt"), "--out", str(world / "new"), *TINY, "--engine", "autograd"]
    assert "out of memory" in assert_one_line_and_nothing_left(argv, world, capsys)

    def torch_out_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 36864000000 bytes")

    monkeypatch.setattr(engines.AutogradEngine, "step", torch_out_of_memory)
    assert "out of memory" in assert_one_line_and_nothing_left(argv, world, capsys)


def test_a_min_char_count_that_keeps_no_character_is_one_line(world, capsys):
    line = assert_one_line_and_nothing_left(["data", "--data", str(world / "words.txt"), "--min-char-count",
                                             "100000000"], world, capsys, "keeps no character")
    assert "most frequent" in line


def test_steps_and_a_budget_together_is_one_line(world, capsys):
    argv = ["train", "--data", str(world / "words.txt"), "--out", str(world / "new"), "--budget", "5", "--steps",
            "200", "--quiet"]
    assert_one_line_and_nothing_left(argv, world, capsys, "not both")


def test_a_maximum_length_of_zero_is_one_line(world, capsys):
    assert_one_line_and_nothing_left(["sample", str(world / "run"), "-n", "3", "--max-len", "0"], world, capsys,
                                     "minimum length 1 (the default: no empty words; a minimum of 0 allows "
                                     "them) is above the maximum length 0")


def test_an_empty_out_or_a_truncated_mix_json_is_one_line_saying_what_to_do(world, capsys, tmp_path):
    assert main(["plot", str(world / "run"), "--out", ""]) == 1  # Path("") is the current folder
    assert "--out is empty; give a name" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    shutil.copytree(world / "run", mixed)
    assert main(["mix", str(mixed), "--ngram-context", "2"]) == 0
    (mixed / "mix.json").write_text((mixed / "mix.json").read_text()[:40])
    capsys.readouterr()
    for argv in (["export", str(mixed), "--out", str(tmp_path / "m.json")], ["eval", str(mixed)]):
        assert main(argv) == 1
        assert f"mix.json is corrupted; fit it again with `makemore mix {mixed}`" in capsys.readouterr().err


def test_an_empty_out_folder_is_refused_by_every_command_that_makes_one(world, capsys, tmp_path):
    data = str(world / "words.txt")
    for argv in (["ensemble", str(world / "run"), str(world / "run2"), "--out", ""],
                 ["lr-find", "--data", data, "--steps", "5", "--out", ""],
                 ["sweep", "--data", data, "--grid", "hidden=8", "--steps", "5", "--out", ""]):
        assert main(argv) == 1, argv
        assert "--out is empty; give a name" in capsys.readouterr().err, argv
    assert not (Path.cwd() / "lr_find.csv").exists()  # it wrote into the folder the command ran in


def test_labelled_lines_to_exclude_must_be_well_formed_and_for_a_labelled_run(world, capsys, tmp_path):
    lines = tmp_path / "taken.txt"
    lines.write_text("girl\talen\n")
    assert main(["sample", str(world / "run"), "-n", "2", "--exclude", str(lines)]) == 1
    assert "LABEL<TAB>ITEM ('girl\\talen'), which is for a run trained with --labels" in capsys.readouterr().err
