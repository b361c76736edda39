"""`makemore serve`: a local web page and JSON API over trained runs.

One page (src/makemore/static/: index.html, app.js, charts.js, style.css, served by the package,
nothing from elsewhere) and a JSON API that the page uses and nothing else:

    GET  /api/runs                     the served runs: config, parameters, dev loss; the limits
    POST /api/sample                   {"run"?, "n", "seed"?, "temperature"?, "top_k"?, "prefix"?, "new_only"?,
                                        "suffix"?, "contains"?, "min_len"?, "max_len"?, "exclude"?, "label"?}
    POST /api/score                    {"run"?, "words": [...], "top"?, "label"?}
    GET  /api/embeddings?run=ID        the character embeddings C in 2-D (PCA when wider) + neighbours
    GET  /api/metrics?run=ID           metrics.csv as columns; "training": true while it grows

It is Starlette (routing, requests, static files) on uvicorn (the HTTP server): no HTTP is
parsed here. Sampling and scoring are the package's own `sample_streams` and `score`, run in
worker threads with a limit of their own (MODEL_THREADS), so that a burst of sampling neither
stalls the event loop nor starves the threads Starlette uses to send static files.

Every request a client can get wrong (bad JSON, wrong types, values out of range, characters
outside the vocabulary, an unknown run) is a 4xx with {"error": "..."}; an unexpected failure
is a 500 with {"error": "internal error"} and its traceback on the server's stderr only.
The API takes run *ids* (looked up in a dict), never paths, and static files are served by
Starlette's StaticFiles from one folder, which refuses `..` and symlinks out of it: nothing
but the named runs and the package's own files can be read through the server.

The modules, each one concept:

    models.py    the served runs: loading, sampling, scoring, the embedding and metrics views
    labelled.py  a labelled run's (--labels): one label's items, samples by label, the label posterior
    requests.py  reading and checking a request's body and fields (LIMITS, BadRequest)
    batching.py  SampleBatcher: concurrent sample requests with the same settings drawn as one batch
    security.py  security headers on every response; the Host check against DNS rebinding
    app.py       App: the routes over the served models, errors as JSON; create_app
    server.py    a listening socket, uvicorn serving an App (Server), and `makemore serve`
"""

from .app import MODEL_THREADS, STATIC, App, create_app
from .batching import BATCH_CAP, SampleBatcher
from .models import (MAX_POINTS, NEIGHBOURS, SAMPLE_MAX_LEN, TABLE_BYTES, TABLES_KEPT, ServedModel, draw_batch,
                     draw_samples, embedding_view, is_training, load_model, metrics_view, read_metrics_rows,
                     sampling_table, score_words)
from .labelled import Labels, OneLabel
from .requests import LIMITS, TOP_DEFAULT, BadRequest, parse_label, parse_sample, parse_score, read_body
from .security import LOOPBACK_NAMES, allowed_hosts_for
from .server import Server, bind, serve, url_of

__all__ = [
    "App", "BATCH_CAP", "BadRequest", "LIMITS", "LOOPBACK_NAMES", "Labels", "MAX_POINTS", "MODEL_THREADS", "NEIGHBOURS",
    "OneLabel", "SAMPLE_MAX_LEN", "STATIC", "SampleBatcher", "Server", "ServedModel", "TABLE_BYTES", "TABLES_KEPT",
    "TOP_DEFAULT", "allowed_hosts_for", "bind", "create_app", "draw_batch", "draw_samples", "embedding_view",
    "is_training", "load_model", "metrics_view", "parse_label", "parse_sample", "parse_score", "read_body",
    "read_metrics_rows", "sampling_table", "score_words", "serve", "url_of",
]
