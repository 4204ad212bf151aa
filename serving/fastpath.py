"""The API's hot path: ganforge's API routes skip BentoML's generic per-request middleware.

Every request BentoML serves passes through about ten ASGI layers before it reaches the mounted
app: Starlette's error middleware, traffic metrics, OpenTelemetry, the access log, the request
timeout (a task, a future and a timer per request), our body limit and API key, BentoML's request
context (a ``Request`` and a context variable), Starlette's exception middleware, its router and
the mount. Measured with bench/serve_load.py, that path cost ganforge more than the whole
micro-batched engine call for a 32x32 model, and kept it below a bare uvicorn handler.

:class:`FastPath` wraps the app BentoML builds in each worker. ``POST`` and ``GET`` requests to the
API routes (``API_PATHS``) go straight to the body limit, the API key and the request layer, with
what BentoML's layers do for them done here once, cheaply:

- the same traffic metrics, into BentoML's own series (``<namespace>_request_total``,
  ``_request_duration_seconds``, ``_request_in_progress``, ``_last_request_timestamp_seconds``,
  same labels), with the labelled children looked up once per endpoint and status;
- the same access log line (logger ``bentoml.access``, BentoML's format) when that logger is on;
- the same request timeout (504 JSON when no response has started within the service's
  ``traffic.timeout``), with one timer per request instead of a task;
- an unexpected exception answers 500 JSON and is logged, as Starlette's error middleware does.

Everything else (probes, ``/metrics``, the docs, the playground, BentoML's own routes) goes through
BentoML's full stack unchanged. Configurations this path does not reproduce, OpenTelemetry spans
(``GAN_TRACING=1``), CORS and ``max_concurrency``, switch it off, and so does ``GAN_FASTPATH=0``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

log = logging.getLogger("ganforge.serving")
access_log = logging.getLogger("bentoml.access")


def find_layer(app: Any, class_name: str) -> Any:
    """The middleware instance of class ``class_name`` in a built Starlette stack (or None)."""
    node = getattr(app, "middleware_stack", None)
    seen = 0
    while node is not None and seen < 64:
        if type(node).__name__ == class_name:
            return node
        node, seen = getattr(node, "app", None), seen + 1
    return None


class _Metrics:
    """BentoML's request metrics for one worker, with the labelled children cached."""

    def __init__(self, layer: Any) -> None:
        from bentoml._internal.context import server_context

        if not layer._is_setup:
            layer._setup()
        self.layer = layer
        self.base = {
            "service_name": server_context.bento_name,
            "service_version": server_context.bento_version,
            "runner_name": server_context.service_name,
        }
        self.last = layer.metrics_last_request_timestamp.labels(**self.base)
        self.progress: dict[str, Any] = {}
        self.done: dict[tuple[str, int], tuple[Any, Any]] = {}

    def started(self, endpoint: str) -> Any:
        self.last.set_to_current_time()
        gauge = self.progress.get(endpoint)
        if gauge is None:
            gauge = self.layer.metrics_request_in_progress.labels(endpoint=endpoint, **self.base)
            self.progress[endpoint] = gauge
        gauge.inc()
        return gauge

    def finished(self, endpoint: str, status: int, seconds: float) -> None:
        pair = self.done.get((endpoint, status))
        if pair is None:
            labels = dict(self.base, endpoint=endpoint, http_response_code=status)
            pair = (
                self.layer.metrics_request_total.labels(**labels),
                self.layer.metrics_request_duration.labels(**labels),
            )
            self.done[(endpoint, status)] = pair
        pair[0].inc()
        pair[1].observe(seconds)


async def _reply(send, status: int, message: str) -> None:
    data = json.dumps({"error": message, "field": None}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(data)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class FastPath:
    """The worker's ASGI app: API routes on the lean path, everything else to BentoML's app."""

    def __init__(self, app: Any, api: Any, paths: frozenset[str], timeout: float | None) -> None:
        self.app, self.api, self.paths, self.timeout = app, api, paths, timeout
        self.metrics: _Metrics | None = None
        # Decided at the first API request, when BentoML's stack is built: see _setup.
        self.fast: bool | None = None
        self.access = False

    def __getattr__(self, name: str) -> Any:  # the wrapped Starlette app's attributes (state, ...)
        return getattr(self.__dict__["app"], name)

    def _setup(self) -> bool:
        """Find BentoML's metrics layer in the stack it built (the lifespan call builds it).
        False, once and for all, when its metrics are of another shape than the ones
        reproduced here: the API routes then take BentoML's full stack."""
        layer = find_layer(self.app, "RunnerTrafficMetricsMiddleware")
        if layer is None and find_layer(self.app, "HTTPTrafficMetricsMiddleware") is not None:
            return False
        self.metrics = _Metrics(layer) if layer is not None else None
        self.access = find_layer(self.app, "AccessLogMiddleware") is not None
        return True

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        if self.fast is None and getattr(self.app, "middleware_stack", None) is not None:
            self.fast = self._setup()
        if not self.fast:
            return await self.app(scope, receive, send)
        endpoint = scope["path"]
        start = time.perf_counter()
        gauge = self.metrics.started(endpoint) if self.metrics is not None else None
        state = [0, False]  # status, response finished

        async def tracked(message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state[0] = message["status"]
                if timer is not None:
                    timer.reschedule(None)  # BentoML's timeout covers the wait for a response
            elif kind == "http.response.body" and not message.get("more_body", False):
                state[1] = True
            await send(message)

        timer = None
        try:
            async with asyncio.timeout(self.timeout) as timer:
                await self.api(scope, receive, tracked)
        except Exception as exc:
            if state[0]:  # the response started: nothing else can be sent
                raise
            if isinstance(exc, TimeoutError) and timer is not None and timer.expired():
                await _reply(
                    send, 504, f"Not able to process the request in {self.timeout} seconds"
                )
                state[:] = [504, True]
            else:
                log.exception("unexpected error on %s %s", scope.get("method"), endpoint)
                await _reply(send, 500, "internal server error")
                state[:] = [500, True]
        finally:
            if gauge is not None:
                gauge.dec()
            self._record(scope, endpoint, time.perf_counter() - start, state)

    def _record(self, scope, endpoint: str, seconds: float, state: list) -> None:
        if self.metrics is not None and state[1]:
            self.metrics.finished(endpoint, state[0], seconds)
        if self.access and access_log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access_log.info(
                "%s (%s) (%s) %.3fms",
                f"{client[0]}:{client[1]}" if client else "_",
                f"scheme={scope['scheme']},method={scope['method']},path={endpoint}",
                f"status={state[0]}",
                seconds * 1000,
            )


def enabled(service: Any) -> str | None:
    """Why the fast path is off for ``service`` (None when it is on)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    from serving.config import current

    settings = current()
    if not settings.fastpath:
        return "GAN_FASTPATH=0"
    if settings.tracing:
        return "GAN_TRACING=1 (OpenTelemetry spans)"
    if BentoMLContainer.http.cors.enabled.get():
        return "CORS is configured"
    if (service.config.get("traffic") or {}).get("max_concurrency"):
        return "traffic.max_concurrency is configured"
    return None


def install(service: Any, paths: tuple[str, ...], build_api) -> None:
    """Serve ``paths`` of ``service`` on the fast path: its ``to_asgi`` (what BentoML's worker and
    the tests run) returns BentoML's app wrapped in :class:`FastPath`. ``build_api()`` makes the
    chain the API routes run through (body limit, API key, request layer)."""
    from _bentoml_sdk.service.factory import Service

    patched = Service.to_asgi
    if getattr(patched, "_ganforge_services", None) is None:
        bentoml_to_asgi = patched

        def to_asgi(self, is_main: bool = True):
            app = bentoml_to_asgi(self, is_main)
            hook = to_asgi._ganforge_services.get(id(self))
            if hook is None:
                return app
            why = enabled(self)
            if why is not None:
                log.info("API fast path off: %s", why)
                return app
            timeout = (self.config.get("traffic") or {}).get("timeout")
            return FastPath(app, hook[1](), frozenset(hook[0]), timeout)

        to_asgi._ganforge_services = {}  # type: ignore[attr-defined]
        Service.to_asgi = to_asgi
        patched = to_asgi
    patched._ganforge_services[id(service)] = (paths, build_api)  # type: ignore[attr-defined]
