"""`makemore serve`: a local web page and JSON API over trained runs.

One page (src/makemore/static/: index.html, app.js, charts.js, style.css, served by the package,
nothing from elsewhere) and a JSON API that the page uses and nothing else:

    GET  /api/runs                     the served runs: config, parameters, dev loss; the limits
    POST /api/sample                   {"run"?, "n", "seed"?, "temperature"?, "top_k"?, "prefix"?, "new_only"?}
    POST /api/score                    {"run"?, "words": [...], "top"?}
    GET  /api/embeddings?run=ID        the character embeddings C in 2-D (PCA when wider) + neighbours
    GET  /api/metrics?run=ID           metrics.csv as columns; "training": true while it grows

It is Starlette (routing, requests, static files) on uvicorn (the HTTP server): no HTTP is
parsed here. Sampling and scoring are the package's own `sample_tagged` and `score`, run in
worker threads with a limit of their own (MODEL_THREADS), so that a burst of sampling neither
stalls the event loop nor starves the threads Starlette uses to send static files.

Every request a client can get wrong (bad JSON, wrong types, values out of range, characters
outside the vocabulary, an unknown run) is a 4xx with {"error": "..."}; an unexpected failure
is a 500 with {"error": "internal error"} and its traceback on the server's stderr only.
The API takes run *ids* (looked up in a dict), never paths, and static files are served by
Starlette's StaticFiles from one folder, which refuses `..` and symlinks out of it: nothing
but the named runs and the package's own files can be read through the server.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..errors import UserError
from .batching import BATCH_CAP, SampleBatcher
from .models import (NEIGHBOURS, SAMPLE_MAX_LEN, ServedModel, draw_samples, embedding_view, is_training,
                     load_model, metrics_view, score_words)
from .requests import LIMITS, TOP_DEFAULT, BadRequest, parse_sample, parse_score, read_body

STATIC = Path(__file__).parent.with_name("static")  # src/makemore/static

MODEL_THREADS = 2  # sampling/scoring at once; the rest wait their turn (2 cores here: more only adds GIL churn)


# --------------------------------------------------------------------------------------------
# The application


def _run_ids(paths: list[str | Path]) -> list[str]:
    """A short id per run for the API: its folder name, made unique with -2, -3, ..."""
    ids: list[str] = []
    for p in paths:
        base = Path(p).resolve().name or "run"
        name, k = base, 2
        while name in ids:
            name, k = f"{base}-{k}", k + 1
        ids.append(name)
    return ids


@dataclass
class App:
    """The served models by id, and the Starlette application over them."""

    models: dict[str, ServedModel]
    allowed_hosts: list[str] | None = None  # Host headers accepted; None: any
    model_threads: int = MODEL_THREADS
    _embeddings: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        import anyio

        if not self.models:
            raise UserError("serve needs at least one run")
        self.gate = anyio.CapacityLimiter(self.model_threads)  # taken on the event loop
        self.threads = anyio.CapacityLimiter(self.model_threads)  # for to_thread; never the bottleneck
        self.batcher = SampleBatcher(self.gate, self._run_sync, cap=BATCH_CAP)
        self.asgi = self._build()

    # -- helpers ------------------------------------------------------------------------------

    def _model(self, run_id) -> tuple[str, ServedModel]:
        if run_id is None or run_id == "":  # no run named: the first
            run_id = next(iter(self.models))
        if not isinstance(run_id, str):
            raise BadRequest(f"run must be a string (a run id from /api/runs), got {json.dumps(run_id)}")
        if run_id not in self.models:
            raise BadRequest(f"unknown run {run_id[:100]!r}; served runs: {', '.join(self.models)}", 404)
        return run_id, self.models[run_id]

    async def _run_sync(self, fn, *args, model_work: bool = True, **kwargs):
        """fn in a worker thread, off the event loop: model work on threads of its own, other
        work (reading files) in Starlette's shared pool, so neither waits for the other."""
        import anyio

        try:
            return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs),
                                                  limiter=self.threads if model_work else None)
        except UserError as e:  # the core's own checks (a character not in the vocabulary, ...)
            raise BadRequest(str(e)) from None

    async def _model_work(self, fn, *args, **kwargs):
        """fn in a model thread, at most model_threads at once; the others wait their turn."""
        async with self.gate:
            return await self._run_sync(fn, *args, **kwargs)

    # -- endpoints ----------------------------------------------------------------------------

    async def runs(self, request):
        from starlette.responses import JSONResponse

        runs = []
        for run_id, m in self.models.items():
            runs.append({"id": run_id, "name": m.path.resolve().name, "kind": m.kind, "params": m.params,
                         "dev_loss": m.dev_loss, "config": m.config, "vocab": m.vocab.chars,
                         "boundary": m.vocab.boundary,
                         "training": any(is_training(p, m.summaries[k]) for k, p in m.metrics.items())})
        return JSONResponse({"runs": runs, "limits": {**LIMITS, "sample_max_len": SAMPLE_MAX_LEN}})

    async def sample(self, request):
        from starlette.responses import JSONResponse

        body = await read_body(request)
        run_id, model = self._model(body.get("run"))
        opts = parse_sample(model, body)
        if opts["seed"] is None:
            key = (run_id, opts["temperature"], opts["top_k"], opts["prefix"], opts["new_only"])
            samples = await self.batcher.draw(key, opts["n"], partial(draw_samples, model, seed=None, **{
                k: v for k, v in opts.items() if k not in ("n", "seed")}))
        else:
            samples = await self._model_work(draw_samples, model, **opts)
        return JSONResponse({"run": run_id, "seed": opts["seed"], "samples": samples})

    async def score(self, request):
        from starlette.responses import JSONResponse

        body = await read_body(request)
        run_id, model = self._model(body.get("run"))
        words, top = parse_score(model, body)
        scores = await self._model_work(score_words, model, words, top)
        return JSONResponse({"run": run_id, "scores": scores})

    async def embeddings(self, request):
        from starlette.responses import JSONResponse

        run_id, model = self._model(request.query_params.get("run"))
        if run_id not in self._embeddings:  # computed once per run: C does not change while served
            self._embeddings[run_id] = await self._run_sync(embedding_view, model, model_work=False)
        return JSONResponse({"run": run_id, **self._embeddings[run_id]})

    async def metrics(self, request):
        from starlette.responses import JSONResponse

        run_id, model = self._model(request.query_params.get("run"))
        view = await self._run_sync(metrics_view, model, model_work=False)
        return JSONResponse({"run": run_id, **view}, headers={"Cache-Control": "no-store"})

    async def index(self, request):
        from starlette.responses import FileResponse

        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    # -- assembly -----------------------------------------------------------------------------

    def _build(self):
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        async def bad_request(request, exc: BadRequest):
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

        async def http_error(request, exc: HTTPException):
            message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
            return JSONResponse({"error": f"{message}: {request.method} {request.url.path}"[:300]},
                                status_code=exc.status_code, headers=getattr(exc, "headers", None))

        async def server_error(request, exc: Exception):  # uvicorn logs the traceback to stderr
            return JSONResponse({"error": "internal error (the server's log has the details)"}, status_code=500)

        routes = [
            Route("/", self.index, methods=["GET", "HEAD"]),
            Route("/api/runs", self.runs, methods=["GET"]),
            Route("/api/sample", self.sample, methods=["POST"]),
            Route("/api/score", self.score, methods=["POST"]),
            Route("/api/embeddings", self.embeddings, methods=["GET"]),
            Route("/api/metrics", self.metrics, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC, follow_symlink=False), name="static"),
        ]
        app = Starlette(routes=routes, exception_handlers={
            BadRequest: bad_request, HTTPException: http_error, Exception: server_error})
        return _SecurityHeaders(_HostCheck(app, self.allowed_hosts) if self.allowed_hosts else app)



class _SecurityHeaders:
    """Every response: no scripts, styles, fonts or connections but the server's own (the page
    works offline and cannot be made to load anything else), no framing, no MIME sniffing."""

    HEADERS = [
        (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                     b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _HostCheck:
    """Refuse a Host header that is not this server's name. A server on 127.0.0.1 is reachable
    from any web page the user opens through DNS rebinding (a hostile name that resolves to
    127.0.0.1); such requests carry the hostile name in Host, so they are turned away here."""

    def __init__(self, app, allowed: list[str]):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
            if name not in self.allowed:
                from starlette.responses import JSONResponse

                response = JSONResponse({"error": f"Host {host[:100]!r} is not this server's name"}, status_code=421)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]


def allowed_hosts_for(host: str) -> list[str] | None:
    """Host names a browser may use to reach a server bound to `host`; None (any) when it is
    bound beyond the loopback interface, where the user picks the name."""
    if host in LOOPBACK_NAMES or host.startswith("127."):
        return sorted({*LOOPBACK_NAMES, host})
    return None


def create_app(runs: list[str | Path], mix: bool = False, host: str = "127.0.0.1",
               model_threads: int = MODEL_THREADS) -> App:
    models = {run_id: load_model(p, mix) for run_id, p in zip(_run_ids(runs), runs)}
    return App(models, allowed_hosts_for(host), model_threads)


# --------------------------------------------------------------------------------------------
# Running it


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), so the URL printed is the real one
    and a client may connect as soon as it is printed."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
    except (OSError, UnicodeError) as e:
        raise UserError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(runs: list[str], host: str = "127.0.0.1", port: int = 8000, mix: bool = False) -> None:
    """`makemore serve`: load the runs, listen, print the URL, serve until Ctrl-C."""
    import torch

    # One torch thread per request instead of several per operation: on small batches the
    # intra-op threads cost more in synchronisation than they save (sampling 20 names took
    # ~3x longer with 2 threads than with 1 on the 2-core machine of benchmarks/serve_bench.py),
    # and concurrent requests already keep the cores busy.
    torch.set_num_threads(1)
    app = create_app(runs, mix=mix, host=host)
    server = Server(app, bind(host, port))
    print(f"makemore serve: {len(app.models)} run(s) ({', '.join(app.models)}) at {server.url}", flush=True)
    print("press Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on: the normal way to stop
        pass
    print("makemore serve: stopped", file=sys.stderr)


class Server:
    """uvicorn serving an App on a bound socket, in this thread (run) or a background one (start)."""

    def __init__(self, app: App, sock: socket.socket):
        import uvicorn

        self.app, self.sock, self.url = app, sock, url_of(sock)
        config = uvicorn.Config(app.asgi, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=3, server_header=False)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    def run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> "Server":
        self.thread = threading.Thread(target=self.run, name="makemore-serve", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.sock.close()
