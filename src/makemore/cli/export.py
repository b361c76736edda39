"""`makemore export`: a trained run as ONNX, one JSON file, or an offline HTML page (export.py)."""

from __future__ import annotations

from .common import _print_json, _subparser


def add_export(sub) -> None:
    p = _subparser(sub, "export", "write a trained run as ONNX (any model), one JSON file of its weights, "
                   "vocabulary and config, or a self-contained HTML page that samples names offline (mlp, bigram); "
                   "see docs/export.md",
                   "makemore export runs/lecture --format onnx --out lecture.onnx\n"
                   "  makemore export runs/lecture --format html --out lecture.html    # open it in a browser")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--format", choices=("onnx", "json", "html"), default=None,
                   help="onnx: log-probabilities of the next character, for ONNX Runtime; json: weights, "
                        "vocabulary and config; html: a page that samples names (default: from --out's extension)")
    p.add_argument("--out", required=True, metavar="PATH", help="the file to write (replaced if it exists)")
    p.add_argument("--neural", action="store_true",
                   help="export the neural model alone where the run's result is its mixture with a count model "
                        "(`makemore mix`), which onnx and html cannot hold")
    p.add_argument("--json", action="store_true", help="say what was written as JSON")


def cmd_export(args) -> int:
    from ..export import export

    info = export(args.run, args.format, args.out, neural=args.neural)
    if args.json:
        _print_json(info)
        return 0
    size = info["bytes"]
    size = f"{size / 1024:,.0f} KiB" if size < 1 << 20 else f"{size / (1 << 20):,.1f} MiB"
    what = f"{info['model']}, {info['params']:,} parameters, {size}"
    if info["format"] == "onnx":
        print(f"wrote {info['path']} ({what}); checked with ONNX Runtime: the model's log-probabilities to "
              f"{info['max_abs_diff']:.1e} on {info['checked_contexts']:,} contexts (of its dev split, and of every "
              f"padding)")
    elif info["format"] == "html":
        print(f"wrote {info['path']} ({what}); open it in a browser: it samples names with no server")
    else:
        print(f"wrote {info['path']} ({what}; {info['tensors']} tensors)")
    return 0
