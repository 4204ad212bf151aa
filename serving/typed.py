"""The other request layer, kept for the A/B measurement: typed ``@bentoml.api`` handlers.

``bentoml serve serving.typed:TypedGanService`` serves /generate through BentoML's own request
handling (pydantic input model built from the signature, its IO descriptors) calling the same
in-process engine and pipeline as serving.service. bench/serve_load.py --typed measures both
under the same ``bentoml serve``; serving.service (the mounted Starlette app) is what ships.
"""

from __future__ import annotations

from typing import Annotated, Any

import bentoml
from pydantic import Field
from starlette.responses import JSONResponse

from serving import bentoml_fixes, metrics
from serving.config import current
from serving.engine import Engine
from serving.errors import ClientError, EngineError
from serving.pipeline import Pipeline
from serving.registry import load_bundles
from serving.schemas import QualityFilter, Seed, Truncation

bentoml_fixes.install()
SETTINGS = current()


@bentoml.service(
    name="gan_typed",
    workers=SETTINGS.api_workers,
    traffic={"timeout": 300},
    tracing={"excluded_urls": ["/generate"]},
)
class TypedGanService:
    def __init__(self) -> None:
        settings = current()
        bundles = load_bundles(settings, threads=settings.threads_per_worker)
        self.engine = Engine(
            bundles,
            settings.max_batch_size,
            settings.batching,
            observe=metrics.engine_batch,
            # No in-flight count here to tell a lone request (serving/app.py keeps one), so
            # every call goes to the engine thread: the shipped path's behaviour under load.
            inline_rows=0,
        )
        self.engine.warm_up()
        self.pipeline = Pipeline(self.engine, settings.limits)

    @bentoml.api
    async def generate(
        self,
        model: str,
        n: Annotated[int, Field(strict=True, ge=1)] = 1,
        seeds: list[Seed] | None = None,
        seed: Seed | None = None,
        truncation: Truncation = 1.0,
        filter: QualityFilter = QualityFilter(),  # noqa: A002 - the API's field name
    ) -> dict[str, Any]:
        try:
            result = await self.pipeline.generate(
                model, n, seeds, seed, truncation, filter.method, filter.oversample
            )
        except ClientError as exc:
            return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status)
        except EngineError as exc:
            return JSONResponse({"error": str(exc), "field": None}, status_code=503)
        metrics.images_returned(result.model.name, "generate", len(result.meta))
        return JSONResponse(result.to_json(truncation))
