"""The application: the served models by id and the Starlette app over them, with the routes of
the JSON API and the page, and how errors are answered (BadRequest: its 4xx; anything
unforeseen: a 500 without the traceback). Sampling and scoring run in worker threads with a
limit of their own (MODEL_THREADS), so that a burst of sampling neither stalls the event loop
nor starves the threads Starlette uses to send static files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..errors import UserError
from .batching import BATCH_CAP, SampleBatcher
from .models import (SAMPLE_MAX_LEN, ServedModel, draw_batch, embedding_view, is_training, load_model,
                     metrics_view, random_seed, score_words)
from .requests import LIMITS, BadRequest, parse_label, parse_sample, parse_score, read_body
from .security import HostCheck, SecurityHeaders, allowed_hosts_for

STATIC = Path(__file__).parent.with_name("static")  # src/makemore/static: the page, shipped as package data
MODEL_THREADS = 2  # sampling/scoring at once; the rest wait their turn (threads beyond the cores only add GIL churn)


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
                         "training": any(is_training(p.parent) for p in m.metrics.values())})
            if m.labels is not None:  # a labelled run: its labels and their shares of the training split
                runs[-1]["labels"] = m.labels.shares()
        return JSONResponse({"runs": runs, "limits": {**LIMITS, "sample_max_len": SAMPLE_MAX_LEN}})

    async def sample(self, request):
        from starlette.responses import JSONResponse

        body = await read_body(request)
        run_id, model = self._model(body.get("run"))
        opts = parse_sample(model, body)
        n, seed = opts.pop("n"), opts.pop("seed")
        # Requests with the same settings (a labelled run's label among them) are drawn together,
        # seeded or not: each from its own seed's stream (a random one without a seed), so a seed
        # gives the same names as alone.
        job = (n, random_seed() if seed is None else seed)
        try:
            samples = await self.batcher.draw((run_id, *opts.values()), job, n, partial(draw_batch, model, **opts))
        except UserError as e:  # this request's conditions turned out hopeless
            raise BadRequest(str(e)) from None
        return JSONResponse({"run": run_id, "seed": seed, "samples": samples})

    async def score(self, request):
        from starlette.responses import JSONResponse

        body = await read_body(request)
        run_id, model = self._model(body.get("run"))
        words, top = parse_score(model, body)
        label = parse_label(model, body)
        scores = await self._model_work(score_words, model, words, top, label)
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
        return SecurityHeaders(HostCheck(app, self.allowed_hosts) if self.allowed_hosts else app)


def create_app(runs: list[str | Path], use: str = "result", host: str = "127.0.0.1",
               model_threads: int = MODEL_THREADS) -> App:
    models = {run_id: load_model(p, use) for run_id, p in zip(_run_ids(runs), runs)}
    return App(models, allowed_hosts_for(host), model_threads)
