"""ganforge's HTTP service: ``bentoml serve serving.service:GanService``.

Two BentoML services. ``GanEngine`` (inner) holds the verified bundles and exposes batchable
``mapping``/``render`` APIs over packed float32 rows, so concurrent requests are merged into engine
batches. ``GanService`` (public, async) validates requests, turns seeds into latents, applies
truncation/style mixing/filters and encodes PNGs; it reaches the engine with
``bentoml.depends`` + ``to_async`` (calling another API of the same service hangs in BentoML 1.4).
Each engine call is an HTTP request to another process, so the public side also coalesces the
rows of concurrent requests into one call (serving/coalesce.py) before BentoML's batcher merges
the calls of all public workers.
Configuration is environment variables (see serving/config.py and the README).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.responses import JSONResponse, Response

from export.sampling import MAX_SEED
from serving import bentoml_fixes, metrics
from serving.coalesce import Coalescer
from serving.config import Settings
from serving.engine import Engine, Layout, ModelInfo
from serving.errors import ClientError
from serving.middleware import ApiKeyMiddleware, BodyLimitMiddleware
from serving.pipeline import DEFAULT_FILTER, Images, Pipeline
from serving.registry import check_bundles, load_bundles

log = logging.getLogger("ganforge.serving")


class _QuietClientErrors(logging.Filter):
    """BentoML logs every request that fails validation as an ERROR with a traceback; a client's
    malformed request is not a server error: keep one INFO line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            record.msg = f"{record.getMessage()}: rejected, {exc.error_count()} validation error(s)"
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(_QuietClientErrors())
bentoml_fixes.install()  # BentoML's per-request timeout timer is never cancelled (see module)
BATCH = Settings.from_env()  # batching knobs are decorator arguments: read once at import
# The engine's batchable APIs: BentoML merges concurrent calls into one batch of rows.
ENGINE_BATCHING = dict(
    batchable=BATCH.batching,
    batch_dim=0,
    max_batch_size=BATCH.max_batch_size,
    max_latency_ms=BATCH.max_latency_ms,
)


def _untraced(*paths: str) -> dict[str, Any]:
    """Service config that skips BentoML's OpenTelemetry span on ``paths``. BentoML wraps every
    request in a span even though its default sample rate (0) records none; in a profile of the
    public worker under load the span code took about a tenth of the samples. GAN_TRACING=1 keeps
    the spans (then set BentoML's tracing.sample_rate and exporter as usual)."""
    return {} if BATCH.tracing else {"tracing": {"excluded_urls": list(paths)}}


Seed = Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)]
Truncation = Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]
Output = Literal["json", "grid"]
ClassLabel = StrictInt | str


class QualityFilter(BaseModel):
    """Discriminator quality filter: keep the best ``n`` of ``n * oversample`` (top_k) or accept by
    calibrated discriminator rejection sampling (drs)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["none", "top_k", "drs"] = DEFAULT_FILTER
    oversample: Annotated[int, Field(strict=True, ge=1)] = 4


@bentoml.service(
    name="gan_engine",
    workers=1,
    threads=1,
    traffic={"timeout": 300},
    # BentoML's client to a dependency replaces its connection pool every `max_requests` calls
    # (default 100) or `max_age` seconds and closes the old one with requests still in flight:
    # under concurrent load that fails them ("Server disconnected"). Never recycle it.
    runner_connection={"max_requests": 2**31 - 1, "max_age": 1e9},
    # one access-log line per engine call doubles the log for nothing: the public one has it
    logging={"access": {"enabled": False}},
    **_untraced("/mapping", "/render"),
)
class GanEngine:
    """Runs the graphs: verified bundles, warmed up before the server reports ready."""

    def __init__(self) -> None:
        settings = Settings.from_env()
        self.engine = Engine(load_bundles(settings), observe=metrics.engine_batch)
        for info in self.engine.models:
            log.info("model %r runs on %s", info.name, info.provider)
        self.engine.warm_up()

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        """The served models and the row layout (for the public service)."""
        layout = self.engine.layout
        return {
            "models": [m.to_dict() for m in self.engine.models],
            "layout": {k: getattr(layout, k) for k in ("in_width", "map_width", "out_width")},
        }

    @bentoml.api(**ENGINE_BATCHING)
    def mapping(self, rows: np.ndarray) -> np.ndarray:
        metrics.engine_rows("mapping", len(rows))
        return self.engine.mapping(rows)

    @bentoml.api(**ENGINE_BATCHING)
    def render(self, rows: np.ndarray) -> np.ndarray:
        metrics.engine_rows("render", len(rows))
        return self.engine.render(rows)


API_PATHS = ("/generate", "/generate_conditional", "/style_mix", "/interpolate", "/models")


@bentoml.service(
    name="gan_service",
    workers=BATCH.api_workers,
    traffic={"timeout": 300},
    **_untraced(*API_PATHS),
)
class GanService:
    """Public HTTP API: /generate, /generate_conditional, /style_mix, /interpolate, /models."""

    engine = bentoml.depends(GanEngine)

    @bentoml.on_deployment
    def preflight() -> None:
        """Runs in `bentoml serve` before any worker starts: with no servable bundle, exit."""
        check_bundles(Settings.from_env())

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self._pipeline: Pipeline | None = None
        self._lock = asyncio.Lock()

    async def _get_pipeline(self) -> Pipeline:
        if self._pipeline is None:
            async with self._lock:
                if self._pipeline is None:
                    desc = await self.engine.to_async.describe()
                    models = [ModelInfo(**m) for m in desc["models"]]
                    layout = Layout(**desc["layout"], models=models)
                    mapping, render = self.engine.to_async.mapping, self.engine.to_async.render
                    if BATCH.batching:
                        mapping = Coalescer(mapping, BATCH.max_batch_size)
                        render = Coalescer(render, BATCH.max_batch_size)
                    self._pipeline = Pipeline(models, layout, self.settings.limits, mapping, render)
        return self._pipeline

    async def __is_ready__(self) -> bool:
        try:
            await self._get_pipeline()
        except Exception as exc:  # the engine is still starting
            log.debug("not ready: %s", exc)
            return False
        return True

    async def _respond(self, endpoint: str, run, output: str, truncation: float = 1.0):
        try:
            result: Images = await run(await self._get_pipeline())
        except ClientError as exc:
            return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status)
        metrics.images_returned(result.model.name, endpoint, len(result.meta))
        filt = result.extra.get("filter")
        if filt and filt["method"] != "none":
            metrics.filtered(result.model.name, filt["method"], filt["generated"], filt["returned"])
        if output == "grid":
            if not result.meta:
                return JSONResponse(
                    {
                        "error": "no image passed the filter; raise filter.oversample",
                        "field": "filter",
                    },
                    status_code=422,
                )
            headers = {}
            if filt:
                headers["X-Acceptance-Rate"] = str(filt["acceptance_rate"])
            return Response(result.to_png(), media_type="image/png", headers=headers)
        # A ready response skips BentoML's per-call output validation (a TypeAdapter per request).
        return JSONResponse(result.to_json(truncation))

    @bentoml.api
    async def generate(
        self,
        model: str,
        n: Annotated[int, Field(strict=True, ge=1)] = 1,
        seeds: list[Seed] | None = None,
        seed: Seed | None = None,
        truncation: Truncation = 1.0,
        filter: QualityFilter = QualityFilter(),  # noqa: A002 - the API's field name
        output: Output = "json",
    ) -> dict[str, Any]:
        """``n`` images from seeds ``seed..seed+n-1`` (default 0) or the given ``seeds``."""
        return await self._respond(
            "generate",
            lambda p: p.generate(
                model, n, seeds, seed, truncation, filter.method, filter.oversample
            ),
            output,
            truncation,
        )

    @bentoml.api
    async def generate_conditional(
        self,
        model: str,
        class_label: ClassLabel | list[ClassLabel],
        n: Annotated[int, Field(strict=True, ge=1)] = 1,
        seeds: list[Seed] | None = None,
        seed: Seed | None = None,
        truncation: Truncation = 1.0,
        filter: QualityFilter = QualityFilter(),  # noqa: A002
        output: Output = "json",
    ) -> dict[str, Any]:
        """``n`` images per class; ``class_label`` is an index, a name, or a list of them."""
        labels = class_label if isinstance(class_label, list) else [class_label]
        return await self._respond(
            "generate_conditional",
            lambda p: p.generate(
                model,
                n,
                seeds,
                seed,
                truncation,
                filter.method,
                filter.oversample,
                class_labels=labels,
            ),
            output,
            truncation,
        )

    @bentoml.api
    async def style_mix(
        self,
        model: str,
        row_seeds: list[Seed],
        col_seeds: list[Seed],
        col_styles: list[StrictInt] | str = "coarse",
        truncation: Truncation = 1.0,
        output: Output = "json",
    ) -> dict[str, Any]:
        """Row seeds' images with the ``col_styles`` layers taken from each column seed."""
        return await self._respond(
            "style_mix",
            lambda p: p.style_mix(model, row_seeds, col_seeds, col_styles, truncation),
            output,
            truncation,
        )

    @bentoml.api
    async def interpolate(
        self,
        model: str,
        seeds: Annotated[list[Seed], Field(min_length=2, max_length=2)],
        steps: Annotated[int, Field(strict=True, ge=2)] = 8,
        space: Literal["z", "w"] = "z",
        truncation: Truncation = 1.0,
        class_label: ClassLabel | None = None,
        output: Output = "json",
    ) -> dict[str, Any]:
        """``steps`` images from ``seeds[0]`` to ``seeds[1]``: slerp in z or lerp in w."""
        return await self._respond(
            "interpolate",
            lambda p: p.interpolate(model, seeds, steps, space, truncation, class_label),
            output,
            truncation,
        )

    @bentoml.api
    async def models(self) -> dict[str, Any]:
        """What is served: kind, resolution, classes, style ranges, gate verdict, provider."""
        pipe = await self._get_pipeline()
        return {
            "models": [m.public() for m in pipe.models.values()],
            "limits": vars(self.settings.limits),
            "default_filter": DEFAULT_FILTER,
            "batching": BATCH.batching,
        }


# Settings are read when the app is built, so tests can change them between apps.
GanService.add_asgi_middleware(BodyLimitMiddleware)
GanService.add_asgi_middleware(ApiKeyMiddleware)
