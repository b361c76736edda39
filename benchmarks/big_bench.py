"""`make bench`'s item 6, `big` (issue 8): the CLI end to end on a big multilingual list, one
process per command, its wall time and peak memory against the issue's targets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------------------
# 6. Scale (issue 8): the CLI end to end on a big multilingual list, each command its own process

BIG_LINES = 700_000
BIG_TIMEOUT = 900          # seconds per command: a slow build reports "timed out", not a hang
BIG_MAX_RSS_MIB = 8192     # a command past this is killed: the machine is shared
STREAM_LINES, STREAM_LIMIT = 100_000, 60  # the first lines of `sample -n 100,000,000`; its target is 10 s
# the targets, whole process (wall time from exec to exit, peak resident memory)
BIG_TARGETS = {
    "train": {"max_seconds": 60, "max_peak_mib": 1536},
    "ngram": {"max_seconds": 120, "max_peak_mib": 3072},
    "sample": {"min_names_per_s": 200_000, "max_peak_mib": 600},
    "stream": {"max_seconds_to_lines": 10},
}


def rss_mib(pid: int) -> float:
    """Resident memory of a live process now (Linux /proc; 0 where it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def last_line(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def run_child(cmd: list[str], timeout: float, max_rss_mib: float, stop_after_lines: int | None = None,
              keep_stdout: bool = True) -> dict:
    """Run `cmd` as its own process: its wall time and peak resident memory (its own ru_maxrss,
    from os.wait4), killed past `timeout` seconds or `max_rss_mib`. With `stop_after_lines`,
    read its stdout and kill it once that many lines came: `seconds_to_lines` is when.

    Never raises for the command's sake: a failure comes back as status "failed" and the last
    line it wrote to stderr.
    """
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        stdout = subprocess.PIPE if stop_after_lines else (out if keep_stdout else subprocess.DEVNULL)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err, stdin=subprocess.DEVNULL)
        killed_for: list[str] = []
        done = threading.Event()

        def watch():  # the one place a child is killed for time or memory
            while not done.wait(0.1):
                if time.perf_counter() - t0 > timeout:
                    killed_for.append(f"timed out after {timeout:.0f} s")
                elif rss_mib(proc.pid) > max_rss_mib:
                    killed_for.append(f"killed past {max_rss_mib:.0f} MiB")
                else:
                    continue
                proc.kill()
                return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        to_lines = None
        if stop_after_lines:
            seen = 0
            while chunk := proc.stdout.read1(1 << 20):
                seen += chunk.count(b"\n")
                if seen >= stop_after_lines:
                    to_lines = time.perf_counter() - t0
                    proc.kill()
                    break
            proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        watcher.join()
        err.seek(0)
        out.seek(0)
        result = {"command": [Path(c).name if c == sys.executable else c for c in cmd],
                  "seconds": seconds, "peak_mib": usage.ru_maxrss / 1024}  # ru_maxrss is KiB on Linux
        if stop_after_lines:
            result["seconds_to_lines"] = to_lines
            result["status"] = "ok" if to_lines is not None else (killed_for[0] if killed_for else
                               f"failed: exit {proc.returncode} before {stop_after_lines:,} lines: {last_line(err.read())}")
        elif killed_for:
            result["status"] = killed_for[0]
        elif proc.returncode != 0:
            result["status"] = f"failed (exit {proc.returncode}): {last_line(err.read())}"
        else:
            result["status"] = "ok"
            if keep_stdout:
                result["stdout_last_line"] = last_line(out.read())
        return result


def meets(row: dict, target: dict) -> bool:
    if row["status"] != "ok":
        return False
    checks = {"max_seconds": lambda v: row["seconds"] <= v,
              "max_peak_mib": lambda v: row["peak_mib"] <= v,
              "min_names_per_s": lambda v: row["names_per_s"] >= v,
              "max_seconds_to_lines": lambda v: row["seconds_to_lines"] <= v}
    return all(checks[k](v) for k, v in target.items())


def big_list(lines: int, timeout: float) -> tuple[Path, dict]:
    """runs/big/names.txt (scripts/make_big_list.py), built once and reused while its sidecar
    says it is whole: the same file bytes for the same seed and Faker version."""
    path = HERE.parent / "runs" / "big" / ("names.txt" if lines == BIG_LINES else f"names-{lines}.txt")
    sidecar = path.with_name(path.name + ".json")
    info = json.loads(sidecar.read_text()) if sidecar.is_file() and path.is_file() else None
    if info is None or info.get("lines") != lines:
        made = run_child([sys.executable, str(HERE.parent / "scripts" / "make_big_list.py"), "--out", str(path),
                          "--lines", str(lines)], timeout, BIG_MAX_RSS_MIB)
        if made["status"] != "ok":
            sys.exit(f"bench: could not build {path}: {made['status']}")
        info = json.loads(sidecar.read_text())
        info["generation_seconds"] = made["seconds"]
    return path, info


def bench_big(corpus, quick: bool, lines: int = BIG_LINES, timeout: float = BIG_TIMEOUT,
              max_rss_mib: float = BIG_MAX_RSS_MIB) -> dict:
    """`makemore data / train --preset fast / eval / ngram --max-context 5 / sample` on the big
    list and, beside them, on names.txt: each command one process, measured whole (imports,
    reading the data, writing the output), as a user meets it. One run each, not a best of
    several: these take minutes on the big list. A command that fails or is killed is a row
    that says so, and the commands that need its output are skipped."""
    path, info = big_list(lines, timeout)
    runs = HERE.parent / "runs" / "bench-big"
    rows = []

    def makemore(*args: str, **kw) -> dict:
        return run_child([sys.executable, "-m", "makemore", *args], timeout, max_rss_mib, **kw)

    for data_name, data in (("big", str(path)), ("names", corpus.source)):
        run = runs / data_name
        shutil.rmtree(run, ignore_errors=True)

        # The sampling targets are for a lecture-size model on names (27 characters); with
        # thousands of characters the output layer is most of the cost (minutes for 1,000,000).

        def row(name: str, label: str, result: dict, target: dict | None = None, target_data: str = "big") -> dict:
            result.update(name=name, label=label, data=data_name)
            if "sample" in name and result["status"] == "ok" and "seconds_to_lines" not in result:
                result["names_per_s"] = SAMPLE_N / result["seconds"]
            if target is not None and data_name == target_data:
                result.update(target=target, met=meets(result, target))
            rows.append(result)
            print(f"[big] {data_name} {label}: {result['status']}, {result['seconds']:.1f} s, "
                  f"{result['peak_mib']:.0f} MiB", file=sys.stderr, flush=True)
            return result

        row("data", "data", makemore("data", "--data", data))
        trained = row("train", "train --preset fast (1,000 steps)", makemore(
            "train", "--data", data, "--preset", "fast", "--steps", "1000", "--out", str(run), "--quiet"),
            BIG_TARGETS["train"])["status"] == "ok"
        skipped = {"command": [], "status": "skipped: train did not finish", "seconds": 0.0, "peak_mib": 0.0}
        row("eval", "eval RUN", makemore("eval", str(run)) if trained else dict(skipped))
        row("ngram", "ngram --max-context 5", makemore("ngram", "--data", data, "--max-context", "5"),
            BIG_TARGETS["ngram"])
        row("sample", f"sample -n {SAMPLE_N:,} > /dev/null", makemore(
            "sample", str(run), "-n", str(SAMPLE_N), "--seed", "0", keep_stdout=False) if trained else dict(skipped),
            BIG_TARGETS["sample"], "names")
        if data_name == "names":  # on the big list the sample row's rate says it: ~50 s for 100,000 lines
            row("sample_stream", f"sample -n {STREAM_N:,}: first {STREAM_LINES:,} lines", run_child(
                [sys.executable, "-m", "makemore", "sample", str(run), "-n", str(STREAM_N), "--seed", "0"],
                min(timeout, STREAM_LIMIT), max_rss_mib, stop_after_lines=STREAM_LINES) if trained else dict(skipped),
                BIG_TARGETS["stream"], "names")
        shutil.rmtree(run, ignore_errors=True)
    targeted = [r for r in rows if "met" in r]
    return {"list": {k: v for k, v in info.items() if k != "by_script"}, "scripts": info.get("by_script"),
            "timeout_s": timeout, "max_rss_mib": max_rss_mib, "rows": rows,
            "met": all(r["met"] for r in targeted)}


SAMPLE_N, STREAM_N = 1_000_000, 100_000_000


def target_text(t: dict) -> str:
    parts = {"max_seconds": "<= {:,.0f} s", "max_peak_mib": "<= {:,.0f} MiB", "min_names_per_s": ">= {:,.0f} names/s",
             "max_seconds_to_lines": "<= {:,.0f} s"}
    return ", ".join(parts[k].format(v) for k, v in t.items())


def report_big(b: dict) -> None:
    info = b["list"]
    scripts = b["scripts"] or {}
    gen = f", built in {info['generation_seconds']:.1f} s" if "generation_seconds" in info else ""
    print(f"\n6. the CLI on a big list: {info['lines']:,} lines ({info['distinct_lines']:,} distinct), "
          f"{info['distinct_characters']:,} distinct characters in {len(scripts.keys() - {'common'})} scripts "
          f"(Faker {info['faker']}{gen}), "
          f"and on names.txt; one process per command, whole-process wall time and peak memory")
    print(f"   {'command':<44} {'data':<6} {'wall s':>8} {'peak MiB':>9} {'result':>18}  target")
    for row in b["rows"]:
        result = ""
        if row["status"] != "ok":
            result = row["status"]
        elif "names_per_s" in row:
            result = f"{row['names_per_s']:,.0f} names/s"
        elif row.get("seconds_to_lines") is not None:
            result = f"{row['seconds_to_lines']:.1f} s to line {STREAM_LINES:,}"
        target = f"{target_text(row['target'])} {'met' if row['met'] else 'MISSED'}" if "target" in row else ""
        wall = f"{row['seconds']:8.1f}" if row["command"] else f"{'-':>8}"
        peak = f"{row['peak_mib']:9,.0f}" if row["command"] else f"{'-':>9}"
        if row["status"] == "ok":
            print(f"   {row['label']:<44} {row['data']:<6} {wall} {peak} {result:>18}  {target}")
        else:  # a failure's message is long: its own line
            print(f"   {row['label']:<44} {row['data']:<6} {wall} {peak} {'':>18}  {target}\n      {result}")
