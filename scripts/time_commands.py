"""Time whole makemore commands: each run --repeat times as its own process, the median wall
time and the largest peak resident memory, with the machine and the date, as JSON.

    python scripts/time_commands.py --repeat 3 --out docs/results/kept_counts.json \
        --without runs/wf600/counts.safetensors \
        "sample runs/wf600 -n 5 --seed 1" "eval runs/wf600"

--without FILE times every command a second time with FILE moved aside (and put back after,
whatever happens): what a command costs with and without what FILE keeps. --fresh DIR removes DIR
before every run (a `train` command's --out, which must not exist).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from makemore.utils import cpu_name  # noqa: E402


def timed(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of `makemore ARGS` as one process, output dropped."""
    seconds, peak_mib, _ = timed_command([sys.executable, "-m", "makemore", *args], f"makemore {shlex.join(args)}")
    return seconds, peak_mib


def timed_command(command: list[str], label: str, cwd: Path | None = None) -> tuple[float, float, float]:
    """(wall seconds, peak resident MiB, peak MiB of its processes together) of COMMAND as one
    process (run in `cwd`), output dropped. The first peak is of its largest process, itself or
    one it waited for (ru_maxrss of os.wait4); the second, of the sum over the process and its
    descendants alive at once, sampled every 0.2 s from /proc (Linux; 0 elsewhere)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=cwd)
    together = [0.0]
    sampler = threading.Thread(target=_sample_tree, args=(proc.pid, together), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{label} failed: {proc.stderr.read().decode(errors='replace').strip()}")
    return seconds, usage.ru_maxrss / 1024, together[0]  # KiB on Linux


def _sample_tree(pid: int, peak: list[float]) -> None:
    """The largest sum of resident MiB over `pid` and its descendants until `pid` is gone."""
    while Path(f"/proc/{pid}").exists():
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            try:
                total += int(next(line for line in Path(f"/proc/{p}/status").read_text().splitlines()
                                  if line.startswith("VmRSS:")).split()[1])
                for task in Path(f"/proc/{p}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, StopIteration, ValueError):  # it ended meanwhile, or is a zombie
                continue
        peak[0] = max(peak[0], total / 1024)
        time.sleep(0.2)


def measure(commands: list[str], repeat: int, variant: str, fresh: str | None = None) -> list[dict]:
    rows = []
    for command in commands:
        times = []
        for _ in range(repeat):
            if fresh:
                shutil.rmtree(fresh, ignore_errors=True)
            times.append(timed(shlex.split(command)))
        row = {"command": f"makemore {command}", "variant": variant,
               "median_seconds": round(statistics.median(t for t, _ in times), 2),
               "seconds": [round(t, 2) for t, _ in times], "peak_mib": round(max(m for _, m in times))}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commands", nargs="+", help="makemore's arguments, one quoted string per command")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--without", metavar="FILE", help="time each command again with FILE moved aside")
    parser.add_argument("--fresh", metavar="DIR", help="remove DIR before every run (a train command's --out)")
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS for the commands (default 1)")
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = args.threads
    rows = measure(args.commands, args.repeat, "as is", args.fresh)
    if args.without:
        kept = Path(args.without)
        aside = kept.with_name(f".{kept.name}.aside")
        kept.rename(aside)
        try:
            rows += measure(args.commands, args.repeat, f"without {kept.name}", args.fresh)
        finally:
            aside.rename(kept)
    result = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, OMP_NUM_THREADS={args.threads}",
              "date": date.today().isoformat(), "command": "python " + shlex.join(sys.argv), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
