"""ganforge's HTTP service: ``bentoml serve serving.service:GanService``.

One BentoML service, ``workers`` processes. Every worker loads and verifies the bundles itself,
warms their sessions up and holds the engine in-process (serving/engine.py): concurrent requests'
rows are merged by an asyncio micro-batcher into one ONNX Runtime call on the worker's engine
thread, so there is no engine process and no HTTP hop per image. The request layer is a Starlette
app mounted with ``@bentoml.asgi_app`` (serving/app.py); BentoML provides the server, the workers,
the middleware chain (request metrics, access log, timeout, then ours: body limit and API key, added
once with ``add_asgi_middleware`` and so covering every route), ``/livez``, ``/readyz``,
``/metrics``, ``bentoml build`` and deployment.
Configuration is environment variables, parsed once (serving/config.py, docs/serving.md).
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
from typing import Any

import bentoml

from serving import bentoml_fixes, metrics
from serving.app import APP, alone, bind
from serving.config import current, worker_device_id
from serving.engine import Engine
from serving.middleware import ApiKeyMiddleware, BodyLimitMiddleware, NotFoundMiddleware
from serving.pipeline import Pipeline
from serving.registry import NoModels, check_bundles, load_bundles
from serving.routes import ROUTES

log = logging.getLogger("ganforge.serving")
bentoml_fixes.install()  # BentoML 1.4's per-request timeout timer is never cancelled (see module)
SETTINGS = current()  # workers and resources are decorator arguments: read at import
API_PATHS = tuple(r.path for r in ROUTES if not r.bentoml)


def observability(settings, paths: tuple[str, ...]) -> dict[str, Any]:
    """BentoML's documented tracing and access-log settings for the service. BentoML wraps every
    request in an OpenTelemetry span even though its default sample rate (0) records none, and
    writes an access-log line per request; on a model whose engine call costs a fraction of a
    millisecond each is a visible share of a request (docs/benchmarks.md). GAN_TRACING=1 keeps the
    spans on ``paths`` (then set BentoML's tracing.sample_rate and exporter as usual);
    GAN_ACCESS_LOG=1 turns the access log on. BentoML's request metrics stay on either way."""
    config: dict[str, Any] = {"logging": {"access": {"enabled": settings.access_log}}}
    if not settings.tracing:
        config["tracing"] = {"excluded_urls": list(paths)}
    return config


def dump_stacks_on_sigusr1() -> None:
    """``kill -USR1 <worker pid>`` writes every thread's Python stack to the worker's stderr (the
    server's log): what a stuck or spinning worker is doing, without a debugger. Registered only
    when nothing else handles SIGUSR1."""
    if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)


def check_device(settings) -> None:
    """GAN_DEVICE=cuda needs an ONNX Runtime with a CUDA provider that really runs: refuse to
    start otherwise (ORT silently falls back to CPU; the loader checks ``get_providers()``)."""
    if settings.device != "cuda" or settings.backend != "onnx":
        return
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise NoModels(
            "GAN_DEVICE=cuda but this onnxruntime has no CUDAExecutionProvider (available: "
            f"{', '.join(available)}): install onnxruntime-gpu[cuda,cudnn], or set GAN_DEVICE=cpu"
        )
    from gancore import cuda

    error = cuda.load_error()  # after loading the pip-installed CUDA libraries
    if error is not None:
        raise NoModels(f"GAN_DEVICE=cuda but {cuda.refusal(error)}; or set GAN_DEVICE=cpu")
    load_bundles(settings, threads=1)  # raises NoModels when every bundle fell back to CPU


@bentoml.service(
    name="gan_service",
    workers=SETTINGS.api_workers,
    resources={"gpu": 1} if SETTINGS.device == "cuda" else {},
    traffic={"timeout": 300},
    **observability(SETTINGS, API_PATHS),
)
@bentoml.asgi_app(APP, path="/")
class GanService:
    """POST /generate, /generate_conditional, /style_mix, /interpolate; GET /models, /docs.json."""

    @bentoml.on_deployment
    def preflight() -> None:
        """Runs in `bentoml serve` before any worker starts: with no servable bundle, exit."""
        settings = current()
        check_bundles(settings)
        check_device(settings)

    def __init__(self) -> None:
        dump_stacks_on_sigusr1()
        settings = current()
        index = bentoml.server_context.worker_index
        device_id = worker_device_id(index)
        bundles = load_bundles(settings, threads=settings.threads_per_worker, device_id=device_id)
        self.engine = Engine(
            bundles,
            settings.max_batch_size,
            settings.batching,
            observe=metrics.engine_batch,
            inline_rows=settings.inline_rows,
            alone=alone,
        )
        for info in self.engine.models:
            log.info("worker %s: model %r runs on %s", index, info.name, info.provider)
        self.engine.warm_up()
        self.pipeline = Pipeline(self.engine, settings.limits)
        bind(self)


GanService.add_asgi_middleware(NotFoundMiddleware)
GanService.add_asgi_middleware(BodyLimitMiddleware)
GanService.add_asgi_middleware(ApiKeyMiddleware)
