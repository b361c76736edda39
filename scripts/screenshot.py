"""The README's picture of `makemore serve`: train a run (or take one), serve it on a free port,
open the page in headless Chromium (scripts/chromium.sh installs it), draw samples with a fixed
seed, explain a name, point at a character of the embedding scatter, and save the page.

    .venv/bin/python scripts/screenshot.py                      # trains runs/serve-demo first (minutes)
    .venv/bin/python scripts/screenshot.py --run runs/lecture --out docs/serve.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import date
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def train_demo(out: Path, steps: int) -> Path:
    """The lecture's model on names.txt, `steps` steps (the page looks the same at any length)."""
    import makemore as mm

    corpus = mm.load_corpus("names")
    model_cfg, train_cfg = mm.make_configs("lecture", vocab_size=corpus.vocab.size, steps=steps)
    mm.train(corpus, model_cfg, train_cfg, out=out, progress=False)
    return out


def chromium() -> str:
    for c in (os.environ.get("MAKEMORE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if c and os.access(c, os.X_OK):
            return c
    sys.exit("no chromium: run `bash scripts/chromium.sh ensure-installed` first")


def main() -> None:
    from playwright.sync_api import sync_playwright

    from makemore import serve

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="serve this run (default: train runs/serve-demo if it is not there)")
    p.add_argument("--steps", type=int, default=200_000,
                   help="training steps of the demo run (default 200,000, the lecture's: a few minutes)")
    p.add_argument("--out", type=Path, default=Path("docs/serve.png"))
    p.add_argument("--explain", default="emma", help="the name to explain (default emma)")
    p.add_argument("--prefix", default="", help="prefix of the samples drawn (default none)")
    args = p.parse_args()

    run = args.run or Path("runs/serve-demo")
    if args.run is None and not (run / "summary.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        print(f"training {run} ({args.steps:,} steps of the lecture preset)...", file=sys.stderr)
        train_demo(run, args.steps)

    srv = serve.Server(serve.create_app([run]), serve.bind("127.0.0.1", 0)).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 960})
            page.goto(srv.url)
            page.wait_for_selector("#samples li.sample")
            page.fill("#seed", "1")
            page.fill("#prefix", args.prefix)
            page.click("#draw")
            page.wait_for_function("() => document.querySelector('#sample-status').textContent.includes('seed 1')")
            page.fill("#explain-word", args.explain)
            page.click("#explain-form button")
            page.wait_for_selector("#explain-table tr.char-row")
            page.wait_for_selector("#curves path.curve")
            page.focus("#scatter svg > g.point[data-char='a']")  # as hovering it (which another dot may cover)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            version = browser.version
            browser.close()
    finally:
        srv.stop()
    from makemore.utils import cpu_name

    print(f"wrote {args.out}: {run}, Chromium {version}, {cpu_name()} ({os.cpu_count()} cores), {date.today().isoformat()}")


if __name__ == "__main__":
    main()
