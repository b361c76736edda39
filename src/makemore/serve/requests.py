"""Reading and checking what a client sends: the JSON body, and each field of a sample or score
request. Every check names the field and what was expected, and fails with BadRequest, which
the application answers as a 4xx with {"error": "..."}.
"""

from __future__ import annotations

import json

from .models import SAMPLE_MAX_LEN, ServedModel

# Limits on one request, stated in docs/serve.md and returned by GET /api/runs.
LIMITS = {
    "n_max": 500,              # samples per /api/sample request
    "word_max": 32,            # characters in a scored word or a sampling prefix, suffix or contains
    "exclude_max": 1000,       # words in a sample request's exclude list
    "words_max": 100,          # words per /api/score request
    "top_max": 10,             # alternatives per position in /api/score
    "temperature_max": 100.0,  # temperature is in (0, temperature_max]
    "body_max": 64 * 1024,     # bytes of a request body
}
TOP_DEFAULT = 5


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _int(body: dict, key: str, default, lo: int, hi: int):
    value = body.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key} must be an integer, got {json.dumps(value)}")
    if not lo <= value <= hi:
        raise BadRequest(f"{key} must be between {lo} and {hi}, got {value}")
    return value


def _number(body: dict, key: str, default: float, lo_exclusive: float, hi: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{key} must be a number, got {json.dumps(value)}")
    if not (lo_exclusive < value <= hi):
        raise BadRequest(f"{key} must be greater than {lo_exclusive:g} and at most {hi:g}, got {value}")
    return float(value)


def _bool(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false, got {json.dumps(value)}")
    return value


def _text(model: ServedModel, value, what: str, allow_empty: bool) -> str:
    """A word or prefix: a string of the model's characters, not too long."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string, got {json.dumps(value)}")
    if not value and not allow_empty:
        raise BadRequest(f"{what} is empty")
    if len(value) > LIMITS["word_max"]:
        raise BadRequest(f"{what} is {len(value)} characters long; at most {LIMITS['word_max']} are allowed")
    vocab = model.vocab
    value = vocab.normalized(value)  # as the model's data was read (NFC, by default)
    if vocab.boundary in value:
        raise BadRequest(f"{what} {value!r} contains the boundary token {vocab.boundary!r}")
    missing = vocab.unknown(value)  # characters, or grapheme clusters
    if missing:
        sep = "" if vocab.units == "codepoint" else " "
        raise BadRequest(f"{what} {value!r} has {'character' if not sep else 'grapheme'}(s) {sep.join(missing)!r} "
                         f"that are not in the model's vocabulary {sep.join(vocab.chars[1:])!r}")
    return value


def _words(body: dict, key: str) -> list[str]:
    """A list of strings, at most exclude_max of them (any characters: one the model never
    writes simply never matches)."""
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise BadRequest(f"{key} must be a list of strings, got {json.dumps(value)[:80]}")
    if len(value) > LIMITS["exclude_max"]:
        raise BadRequest(f"{key} may hold at most {LIMITS['exclude_max']} words, got {len(value)}")
    return value


SAMPLE_FIELDS = ("run", "n", "seed", "temperature", "top_k", "prefix", "suffix", "contains", "min_len", "max_len",
                 "exclude", "new_only", "label")
SCORE_FIELDS = ("run", "words", "top", "label")


def _known_fields(body: dict, known: tuple[str, ...]) -> None:
    """A field the endpoint does not read is a 400: a misspelt one ("temprature") would be
    ignored, and the answer look like one to the request made."""
    import difflib

    for key in body:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            nearest = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadRequest(f"unknown field {json.dumps(key)[:80]}{nearest}; the fields are {', '.join(known)}")


def parse_sample(model: ServedModel, body: dict) -> dict:
    from ..errors import UserError
    from ..conditions import Constraints

    _known_fields(body, SAMPLE_FIELDS)
    seed = _int(body, "seed", None, 0, 2**63 - 1)
    top_k = _int(body, "top_k", None, 1, len(model.vocab.chars))
    prefix = _text(model, body.get("prefix", ""), "prefix", allow_empty=True)
    longest = LIMITS["word_max"] + SAMPLE_MAX_LEN  # a prefix and all a sample may add to it
    constraints = Constraints(
        suffix=_text(model, body.get("suffix", ""), "suffix", allow_empty=True),
        contains=_text(model, body.get("contains", ""), "contains", allow_empty=True),
        min_len=_int(body, "min_len", 1, 0, longest),
        max_len=_int(body, "max_len", None, 0, longest),
        exclude=_words(body, "exclude"))
    try:  # what no sample can meet: min_len above max_len, a prefix longer than max_len, ...
        constraints.check(model.vocab, prefix, SAMPLE_MAX_LEN)
    except UserError as e:
        raise BadRequest(str(e)) from None
    return {
        "n": _int(body, "n", 20, 1, LIMITS["n_max"]),
        "seed": seed,
        "temperature": _number(body, "temperature", 1.0, 0.0, LIMITS["temperature_max"]),
        "top_k": top_k,
        "prefix": prefix,
        "new_only": _bool(body, "new_only", False),
        "constraints": constraints,
        "label": parse_label(model, body),
    }


def parse_label(model: ServedModel, body: dict) -> str | None:
    """A labelled run's `label` (a name from /api/runs), or None: none given, or "" (any label).
    A label for a run trained without labels, or one the run does not know, is a 400."""
    from ..errors import UserError

    value = body.get("label")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"label must be a string (a label from /api/runs), got {json.dumps(value)[:80]}")
    if model.labels is None:
        raise BadRequest(f"run {model.path.name!r} was trained without labels: label needs a run trained with --labels")
    try:
        return model.labels.check(value)
    except UserError as e:
        raise BadRequest(str(e)) from None


def parse_score(model: ServedModel, body: dict) -> tuple[list[str], int]:
    _known_fields(body, SCORE_FIELDS)
    words = body.get("words")
    if not isinstance(words, list) or not words:
        raise BadRequest(f"words must be a non-empty list of strings, got {json.dumps(words)[:80]}")
    if len(words) > LIMITS["words_max"]:
        raise BadRequest(f"at most {LIMITS['words_max']} words per request, got {len(words)}")
    words = [_text(model, w, f"word {i + 1}", allow_empty=False) for i, w in enumerate(words)]
    return words, _int(body, "top", TOP_DEFAULT, 0, LIMITS["top_max"])


async def read_body(request) -> dict:
    """The request's body: a JSON object of at most body_max bytes, sent as application/json."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadRequest("the body must be JSON, sent with Content-Type: application/json", 415)
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > LIMITS["body_max"]):
        raise BadRequest(f"the body must be at most {LIMITS['body_max']} bytes", 413)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > LIMITS["body_max"]:
            raise BadRequest(f"the body must be at most {LIMITS['body_max']} bytes", 413)
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN/Infinity; JSON does not
