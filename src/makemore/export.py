"""A trained run in other forms, for use outside makemore (`makemore export`, docs/export.md).

* ONNX (`export_onnx`), any model: a graph with one input `idx`, int64 (batch, block_size),
  the run's vocabulary ids of the context (vocab.json, boundary-padded on the left as every
  makemore context is), and one output `log_probs`, float32 (batch, vocab): the
  log-probabilities of the next character. The batch axis is dynamic. It is made by torch's
  exporter (torch.export, then onnxscript) from the model in eval mode over the whole window (a
  sequence model's trimming of leading padding, models.base.trim_padding, has a width that
  depends on the data, and is only a saving), and checked before it is written: ONNX Runtime's
  log-probabilities on contexts of the run's dev split and on contexts of every padding (from
  none to the whole window) must match the run's predictor (`makemore score`'s) to
  ONNX_TOLERANCE. The vocabulary and the run's config travel in the model's metadata.
* JSON (`export_json`; read back by `load_json`): the run's config.json, its vocabulary and every
  tensor of the model (parameters and buffers) as a shape and a flat row-major list, in one file.
* HTML (`export_html`): one self-contained page (inline script and style, the weights embedded,
  nothing fetched) that samples names in the browser with a temperature and the constraints a
  name-maker asks for. It runs the MLP and the bigram model (export_page/sampler.js).

Every file is written through outputs.atomic_write: a failure leaves nothing at --out.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import rundir
from .errors import UserError
from .outputs import atomic_write, output_file

FORMATS = ("onnx", "json", "html")
EXTENSIONS = {".onnx": "onnx", ".json": "json", ".html": "html", ".htm": "html"}
JSON_FORMAT = "makemore-json/1"
PAGE_FORMAT = "makemore-page/1"
ONNX_FORMAT = "makemore-onnx/1"
# The largest difference allowed between ONNX Runtime's log-probabilities and the model's
# (float32 arithmetic in another order), and how many contexts of the run's split are compared.
ONNX_TOLERANCE = 1e-3
CHECK_CONTEXTS = 512
# What the page samples: the models whose forward pass sampler.js computes.
PAGE_MODELS = ("mlp", "bigram")
PAGE_DIR = Path(__file__).with_name("export_page")
ONNX_PACKAGES = "pip install onnx onnxruntime onnxscript (or: pip install 'makemore[export]')"


def format_of(out: str | Path, fmt: str | None) -> str:
    """The format asked for, or the one --out's extension names; the two must not disagree (an
    ONNX file named .html would overwrite a page)."""
    suffix = Path(out).suffix.lower()
    if fmt is not None:
        if fmt not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if EXTENSIONS.get(suffix, fmt) != fmt:
            raise UserError(f"--format {fmt} but --out {out} names the {EXTENSIONS[suffix]} format: give a name "
                            f"ending in .{fmt}, or drop --format")
        return fmt
    if suffix not in EXTENSIONS:
        raise UserError(f"give --format ({', '.join(FORMATS)}): --out {out} has no extension that names one "
                        f"(.onnx, .json, .html)")
    return EXTENSIONS[suffix]


def load_for_export(path, what: str, neural: bool = False, labelled: bool = False):
    """RUN (a path, or a run loaded already) as a runs.Run whose neural model is what is
    exported: an ensemble, or a run whose result is its mixture with a count model or the count
    model (mixture.py), is one UserError (the latter unless `neural`: the neural model alone is
    then exported, as --neural says); so is a labelled run unless the format holds labels."""
    from .mixture import result_of, result_words
    from .runs import load_any

    run = path if hasattr(path, "model_cfg") or hasattr(path, "runs") else load_any(path)
    if not rundir.is_run_dir(run.path):
        names = ", ".join(r.path.name for r in run.runs[:3]) + (", ..." if len(run.runs) > 3 else "")
        raise UserError(f"{path} is an ensemble of {len(run.runs)} runs; {what} exports one run: give one of its "
                        f"members ({names})")
    if run.vocab.labels and not labelled:
        raise UserError(f"{path} was trained with --labels, which {what} does not read (its input is the characters "
                        f"alone); --format json exports a labelled run's weights, labels and vocabulary")
    fitted = rundir.read_mixture(run.path)
    if fitted is not None and not neural:
        try:
            result = fitted.get("result") or result_of(fitted)
            which = result_words(result, fitted.get("count_model", "kneser_ney"))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"{run.path / 'mix.json'} is corrupted; fit it again with `makemore mix {path}`") from None
        if result != "model":
            raise UserError(f"{path}'s result is {which} (mix.json), which {what} cannot hold; add --neural to export "
                            f"its {run.model_cfg.name} alone")
    return run


def write_file(out: Path, data: bytes | str) -> None:
    """`data` at `out`, atomically (outputs.atomic_write)."""
    data = data.encode("utf-8") if isinstance(data, str) else data

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(out, write)


# ----------------------------------------------------------------------------------------
# ONNX


class LogProbs(nn.Module):
    """The graph exported: contexts (batch, block_size) -> log-probabilities (batch, vocab)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # an adaptive softmax's logits are log-probabilities already: log_softmax leaves them so
        return F.log_softmax(self.model(idx)[0].float(), dim=-1)


def _onnx_modules():
    import importlib

    try:
        import onnx
        import onnxruntime

        importlib.import_module("onnxscript")  # torch's exporter needs it
    except ImportError as e:
        raise UserError(f"ONNX export needs the {e.name or 'onnx'} package: {ONNX_PACKAGES}") from None
    return onnx, onnxruntime


def check_contexts(run, n: int = CHECK_CONTEXTS) -> np.ndarray:
    """The contexts an export is checked on: up to n real ones of the run's dev split (train if
    it has none), spread over it, and a few of every padding, from the whole window to none
    (random characters: windows longer than the words never hold a full one in real data)."""
    from .data import Examples

    T, V = run.model_cfg.block_size, run.vocab.size
    words = run.splits["dev"] or run.splits["train"]
    examples = Examples.from_words(words, run.vocab)
    positions = np.unique(np.linspace(0, len(examples) - 1, num=min(n, len(examples))).round().astype(np.int64))
    rng = np.random.default_rng(0)
    padded = np.zeros((4 * (T + 1), T), dtype=np.int64)
    for i in range(padded.shape[0]):
        length = i % (T + 1)
        if length and V > 1:
            padded[i, T - length:] = rng.integers(1, V, length)
    return np.concatenate([examples.contexts(positions, T), padded])


def onnx_bytes(model: nn.Module, block_size: int, example: torch.Tensor) -> bytes:
    """The ONNX model of LogProbs(model) as bytes, by torch's exporter (torch.export: the one that
    exports every makemore model, and the legacy TorchScript tracer is deprecated), quietly."""
    import contextlib
    import io
    import logging
    import warnings

    model.eval()
    model.trim_windows = False  # the whole window: the width trimmed depends on the data (models.base)
    wrapper = LogProbs(model).eval()
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript",
                                                       "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, (example,), input_names=["idx"], output_names=["log_probs"],
                                        dynamo=True, dynamic_shapes={"idx": {0: torch.export.Dim("batch")}},
                                        optimize=True, verbose=False)
        return program.model_proto.SerializeToString()
    except UserError:
        raise
    except Exception as e:  # the exporter's own failure: one line, not its pages of graph
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise UserError(f"torch could not export this {model.cfg.name} to ONNX: {type(e).__name__}: {first}") from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def onnx_log_probs(session, contexts: np.ndarray) -> np.ndarray:
    """ONNX Runtime's log-probabilities (n, vocab) of contexts (n, block_size)."""
    return session.run(["log_probs"], {"idx": np.ascontiguousarray(contexts, dtype=np.int64)})[0]


def export_onnx(run, out: str | Path, neural: bool = False) -> dict:
    """RUN's model (a run directory, or a run loaded) as an ONNX file at `out` (see the module
    doc), checked with ONNX Runtime against the run's predictor before it is written. Returns
    what was checked; `neural` as `makemore export --neural`."""
    from .predict import model_predictor

    out = output_file(out)
    run = load_for_export(run, "an ONNX file", neural=neural)
    onnx, ort = _onnx_modules()
    model, cfg = run.model, run.model_cfg
    contexts = check_contexts(run)
    example = torch.from_numpy(contexts[:3] if len(contexts) >= 3 else np.zeros((3, cfg.block_size), np.int64))
    proto = onnx.load_from_string(onnx_bytes(model, cfg.block_size, example))
    config = rundir.read_config(run.path)
    onnx.helper.set_model_props(proto, {
        "makemore.format": ONNX_FORMAT,
        "makemore.model": cfg.name,
        "makemore.block_size": str(cfg.block_size),
        "makemore.vocab": json.dumps(list(run.vocab.chars), ensure_ascii=False),
        "makemore.unk": json.dumps(run.vocab.unk, ensure_ascii=False),
        "makemore.config": json.dumps(config, ensure_ascii=False),
    })
    proto.doc_string = (f"makemore {cfg.name} from {run.path.name}: idx int64 (batch, {cfg.block_size}), the ids of "
                        f"the context in makemore.vocab, boundary (id 0) padded on the left -> log_probs float32 "
                        f"(batch, {cfg.vocab_size}) of the next character")
    data = proto.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model_predictor(model)(torch.from_numpy(contexts)).numpy()
    got = onnx_log_probs(session, contexts)
    diff = float(np.abs(got - expected).max()) if len(contexts) else 0.0
    if not (diff <= ONNX_TOLERANCE):
        raise UserError(f"the ONNX graph of this {cfg.name} disagrees with the model by {diff:.3g} in log-probability "
                        f"(more than {ONNX_TOLERANCE:g}): nothing written")

    write_file(out, data)
    return _written(run, {"format": "onnx", "path": str(out), "bytes": len(data), "checked_contexts": len(contexts),
                          "max_abs_diff": diff})


def _written(run, info: dict) -> dict:
    """What an export wrote, and of which run."""
    return {**info, "model": run.model_cfg.name, "params": run.model.num_params(), "run": str(run.path)}


# ----------------------------------------------------------------------------------------
# JSON


def _tensor_json(value: torch.Tensor, chunk: int = 1 << 16):
    """{"shape", "dtype", "data"} of one tensor as JSON text, in pieces of `chunk` values (a
    hashed feature table holds tens of millions): floats in float32's shortest round-tripping
    form (numpy's), integers as they are."""
    a = value.detach().cpu().contiguous().numpy()
    floats = a.dtype.kind == "f"
    flat = (a.astype(np.float32) if floats else a).reshape(-1)
    yield f'{{"shape": {json.dumps(list(a.shape))}, "dtype": "{"float32" if floats else "int64"}", "data": ['
    for start in range(0, len(flat), chunk):
        piece = flat[start:start + chunk]
        # numpy's float32 str is the shortest that reads back as the same float32
        yield ("," if start else "") + ",".join(str(x) if floats else str(int(x)) for x in piece)
    yield "]}"


def json_chunks(run):
    """The JSON export of a run (docs/export.md), as pieces of text: format tag, the run's
    config.json, its vocab.json, and every tensor of the model's state_dict as shape + flat
    row-major list."""
    config = rundir.read_config(run.path)
    vocab = rundir.read_json(run.path / "vocab.json", "an incomplete run directory")
    head = {"format": JSON_FORMAT, "model": run.model_cfg.name,
            "about": "a makemore run: config is the run's config.json, vocab its vocab.json (id i is chars[i]; 0 is "
                     "the boundary token), tensors the model's parameters and buffers, each a shape and its values "
                     "in row-major order (docs/export.md)",
            "config": config, "vocab": vocab}
    fitted = rundir.read_mixture(run.path)
    if fitted is not None:  # the mixture's weight and figures; Kneser-Ney is counted from words.json (docs/export.md)
        head["mix"] = fitted
    yield json.dumps(head, ensure_ascii=False, indent=1)[:-2] + ',\n "tensors": {\n'
    yield from _tensors_json(run.model.state_dict())
    gate = _learned_gate(run, fitted)
    if gate:  # the counts are counted again from words.json; the gate's weights are learned, so they are here
        yield ' },\n "count_gate": {\n'
        yield from _tensors_json(gate)
    yield " }\n}\n"


def _tensors_json(tensors: dict[str, torch.Tensor]):
    items = list(tensors.items())
    for i, (name, value) in enumerate(items):
        yield f"  {json.dumps(name)}: "
        yield from _tensor_json(value)
        yield ",\n" if i < len(items) - 1 else "\n"


def _learned_gate(run, fitted: dict | None) -> dict[str, torch.Tensor]:
    """The weights of the gate of a mixture's learned count model (interpolation.Gate), from
    RUN/counts.safetensors; {} for any other run."""
    from .mixture import kept_count_model

    if not fitted or fitted.get("count_model") != "learned":
        return {}
    return kept_count_model(run, fitted["ngram_context"], None, "learned").gate.state_dict()


def json_text(run) -> str:
    """The JSON export of a run as one string (json_chunks)."""
    return "".join(json_chunks(run))


def export_json(run, out: str | Path, neural: bool = True) -> dict:
    """RUN's model (a run directory, or a run loaded; a labelled one too) as one JSON file at
    `out`: its neural model, whatever its result (the file holds weights, not counts)."""
    out = output_file(out)
    run = load_for_export(run, "a JSON export", neural=True, labelled=True)
    written = 0

    def write(tmp: str) -> None:  # piece by piece: memory stays that of the model, not of its text
        nonlocal written
        with open(tmp, "w", encoding="utf-8") as f:
            for piece in json_chunks(run):
                written += len(piece.encode("utf-8"))
                f.write(piece)

    atomic_write(out, write)
    return _written(run, {"format": "json", "path": str(out), "bytes": written, "tensors": len(run.model.state_dict())})


def load_json(path: str | Path):
    """A JSON export read back: (model in eval mode, data.Vocab, the run's config dict). Every
    name and shape is checked against the config's model (runs.load_weights)."""
    from . import models
    from .config import configs_from_dict
    from .data import Vocab
    from .runs import load_weights

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a readable JSON file: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        raise UserError(f"{path} is not a makemore JSON export (no {JSON_FORMAT!r} format tag)")
    try:
        model_cfg, _ = configs_from_dict(doc["config"])
        vocab = Vocab.from_json(doc["vocab"], normalize=doc["config"].get("data", {}).get("normalize", "none"))
        tensors = {}
        for name, t in doc["tensors"].items():
            dtype = {"float32": torch.float32, "int64": torch.int64}[t["dtype"]]
            tensors[name] = torch.tensor(t["data"], dtype=dtype).reshape(t["shape"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is a corrupted makemore JSON export ({type(e).__name__}: {e})") from None
    model_cfg.validate()
    model = models.build(model_cfg)
    load_weights(model, tensors, path)
    return model.eval(), vocab, doc["config"]


# ----------------------------------------------------------------------------------------
# HTML


def _b64(value: torch.Tensor) -> str:
    """A float tensor as base64 of its float32 values, little-endian, row-major."""
    return base64.b64encode(value.detach().cpu().contiguous().numpy().astype("<f4").tobytes()).decode("ascii")


def page_model(run) -> dict:
    """What sampler.js reads: the model's kind, vocabulary and tensors (float32, base64)."""
    cfg = run.model_cfg
    if cfg.name not in PAGE_MODELS:
        raise UserError(f"the HTML page samples from the {' and '.join(PAGE_MODELS)} models; {run.path} is a run of "
                        f"the {cfg.name} model: export it with --format onnx or json")
    if getattr(cfg, "hash_orders", 0):  # sampler.js does not hash, and the table would make the page huge
        raise UserError(f"the HTML page does not compute hashed context features; {run.path} has them (--hash-orders "
                        f"{cfg.hash_orders}, a table of {1 << cfg.hash_bits:,} rows): export it with --format onnx or "
                        f"json")
    state = run.model.state_dict()
    tensors = {name: {"shape": list(t.shape), "data": _b64(t)} for name, t in state.items() if t.is_floating_point()}
    model = {"format": PAGE_FORMAT, "model": cfg.name, "run": run.path.resolve().name, "vocab": list(run.vocab.chars),
             "unk": run.vocab.unk_id, "block_size": cfg.block_size, "tensors": tensors,
             "params": run.model.num_params()}
    if cfg.name == "mlp":
        model.update(layers=cfg.layers, direct=cfg.direct)
        layout = cfg.output_layout()
        if layout is not None:
            model["adaptive"] = {"head": layout.head, "cutoffs": list(layout.cutoffs),
                                 "output_order": [int(i) for i in state["output_order"]]}
    return model


def page_html(run) -> str:
    """The self-contained sampling page of a run (an MLP or bigram model)."""
    import html

    model = page_model(run)
    # inside <script>: no "</script>" or "<!--" can occur once every "<" is escaped
    data = json.dumps(model, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    cfg = run.model_cfg
    what = (f"MLP, {cfg.block_size} characters of context" if cfg.name == "mlp" else "bigram model")
    title = f"makemore: {run.path.resolve().name}"
    template = (PAGE_DIR / "page.html").read_text(encoding="utf-8")
    replacements = {
        "{{title}}": html.escape(title),
        "{{run}}": html.escape(run.path.resolve().name),
        "{{about}}": html.escape(f"{what}, {model['params']:,} parameters, {run.vocab.size:,} characters"),
        "{{style}}": (PAGE_DIR / "page.css").read_text(encoding="utf-8"),
        "{{script}}": (PAGE_DIR / "sampler.js").read_text(encoding="utf-8"),
        "{{model}}": data,
    }
    # one pass: a value is never searched for another's placeholder
    return re.sub(r"\{\{\w+\}\}", lambda m: replacements[m.group(0)], template)


def export_html(run, out: str | Path, neural: bool = False) -> dict:
    """RUN's model (a run directory, or a run loaded: an MLP or bigram model) as the offline
    sampling page at `out`; `neural` as `makemore export --neural`."""
    out = output_file(out)
    run = load_for_export(run, "the page", neural=neural)
    text = page_html(run)
    write_file(out, text)
    return _written(run, {"format": "html", "path": str(out), "bytes": len(text.encode("utf-8"))})


EXPORTERS = {"onnx": export_onnx, "json": export_json, "html": export_html}


def export(run_dir: str | Path, fmt: str | None, out: str | Path, neural: bool = False) -> dict:
    """`makemore export`: RUN as `fmt` (or the format --out's extension names) at `out`.
    Returns what was written (format, path, bytes, and the format's own figures)."""
    output_file(out)  # a bad --out is said before the run is loaded
    fmt = format_of(out, fmt)
    return EXPORTERS[fmt](run_dir, out, neural=neural or fmt == "json")


__all__ = ["FORMATS", "JSON_FORMAT", "ONNX_FORMAT", "PAGE_FORMAT", "ONNX_TOLERANCE", "PAGE_MODELS", "export",
           "export_onnx", "export_json", "export_html", "load_json", "json_chunks", "json_text", "page_html",
           "page_model",
           "onnx_log_probs", "check_contexts", "format_of", "load_for_export"]
