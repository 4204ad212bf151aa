"""The request layer: a Starlette app that BentoML mounts (``@bentoml.asgi_app``) in every worker.

Its routes come from the route table (serving/routes.py). A handler parses the body once with the
request model (``model_validate_json``), calls the pipeline, and answers JSON (base64 images), one
binary image, or a binary grid. Every error is built by serving/errors.py: a client mistake is a
4xx naming the field, an engine failure a 503 with ``Retry-After``.

The handlers reach the worker's pipeline through :func:`bind`: the service instance BentoML builds
in each worker binds itself at start (one service per worker process).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from gancore.images import ANIMATION_FORMATS, FORMATS
from serving import metrics, openapi
from serving.errors import ClientError, EngineError, ErrorResponse
from serving.pipeline import Images, Pipeline
from serving.routes import MEDIA_TYPES, ROUTES, Route
from serving.schemas import (
    GenerateConditionalRequest,
    GenerateRequest,
    InterpolateRequest,
    StyleMixRequest,
)

log = logging.getLogger("ganforge.serving")
_TYPE_TAGS = {"int", "str", "float", "bool", "list", "dict", "none"}


error = ErrorResponse


def _field(loc: tuple) -> str | None:
    """A pydantic error location as a field path: ``filter.method``, ``seeds[1]`` (union member
    tags such as ``int`` or ``list[int]`` are dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TYPE_TAGS or "[" in part or "-" in part:
            break
        else:
            out += f".{part}" if out else part
    return out or None


def validation_error(exc: ValidationError) -> ErrorResponse:
    """The body is not JSON / not an object: 400. A field is wrong: 422 naming it."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    first = errors[0]
    field = _field(tuple(first["loc"]))
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    if field is None:
        what = "not valid JSON" if first["type"] == "json_invalid" else "not a JSON object"
        return error(400, f"the request body is {what}: {first['msg']}", "body", detail)
    return error(422, f"{field}: {first['msg']}", field, detail)


def content_type_error(request: Request) -> ErrorResponse | None:
    """JSON bodies only: another media type is 415, a malformed Content-Type header 400."""
    raw = request.headers.get("content-type")
    if raw is None:
        return None
    media = raw.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return None
    if "/" not in media or media.startswith("/") or media.endswith("/"):
        return error(
            400,
            f"malformed Content-Type {raw[:100]!r}: send 'application/json'",
            "Content-Type",
        )
    return error(
        415,
        f"Content-Type {media[:100]!r} is not supported: send the request as 'application/json'",
        "Content-Type",
    )


Run = Callable[[Pipeline, Any], Awaitable[Images]]


def _generate(pipe: Pipeline, r: GenerateRequest) -> Awaitable[Images]:
    f = r.filter
    return pipe.generate(r.model, r.n, r.seeds, r.seed, r.truncation, f.method, f.oversample)


def _generate_conditional(pipe: Pipeline, r: GenerateConditionalRequest) -> Awaitable[Images]:
    labels = r.class_label if isinstance(r.class_label, list) else [r.class_label]
    f = r.filter
    return pipe.generate(
        r.model, r.n, r.seeds, r.seed, r.truncation, f.method, f.oversample, class_labels=labels
    )


def _style_mix(pipe: Pipeline, r: StyleMixRequest) -> Awaitable[Images]:
    return pipe.style_mix(r.model, r.row_seeds, r.col_seeds, r.col_styles, r.truncation)


_WALK_FIELDS = ("frames", "loop", "fps")


def _interpolate(pipe: Pipeline, r: InterpolateRequest) -> Awaitable[Images]:
    if r.output == "animation":
        if "steps" in r.model_fields_set:
            raise ClientError("steps is for a strip of stills: an animation takes frames", 422,
                              "steps")  # fmt: skip
        return pipe.walk(r.model, r.seeds, r.frames, r.loop, r.space, r.truncation, r.class_label)
    for name in _WALK_FIELDS:
        if name in r.model_fields_set:
            raise ClientError(f"{name} applies to output 'animation' only", 422, name)
    if len(r.seeds) != 2:
        raise ClientError(
            f"interpolation takes 2 seeds, got {len(r.seeds)}: a walk through more is output "
            "'animation'",
            422,
            "seeds",
        )
    return pipe.interpolate(r.model, r.seeds, r.steps, r.space, r.truncation, r.class_label)


RUNS: dict[str, Run] = {
    "/generate": _generate,
    "/generate_conditional": _generate_conditional,
    "/style_mix": _style_mix,
    "/interpolate": _interpolate,
}


_BOUND: list[Any] = []


def bind(service: Any) -> Any:
    """Serve requests with ``service.pipeline`` (its worker's engine); returns the one before."""
    before = _BOUND[0] if _BOUND else None
    _BOUND[:] = [service]
    return before


def bound() -> Any:
    if not _BOUND:
        raise RuntimeError("no ganforge service is bound in this process")
    return _BOUND[0]


def _pipeline() -> Pipeline:
    return bound().pipeline


def check_output(pipe: Pipeline, r: Any) -> None:
    if r.output == "animation":
        if r.animation_format() not in ANIMATION_FORMATS:
            raise ClientError(
                f"format {r.format!r} is not an animation format: use one of "
                f"{list(ANIMATION_FORMATS)}",
                422,
                "format",
            )
    elif r.format not in FORMATS:
        raise ClientError(
            f"format {r.format!r} is for output 'animation' only: use one of {list(FORMATS)}",
            422,
            "format",
        )
    if r.output == "json":
        if r.scale != 1:
            raise ClientError(
                f"scale {r.scale} applies to output 'image' or 'grid', not 'json'", 422, "scale"
            )
    elif r.scale > pipe.limits.max_scale:
        raise ClientError(
            f"scale {r.scale} is too large: at most {pipe.limits.max_scale} allowed", 422, "scale"
        )


async def respond(endpoint: str, r: Any, result: Images) -> Response:
    """The pipeline's images as the response the request asked for."""
    kept = [m for m in result.meta if not m.get("blank")]
    metrics.images_returned(result.model.name, endpoint, len(kept))
    filt = result.extra.get("filter")
    if filt and filt["method"] != "none":
        metrics.filtered(result.model.name, filt["method"], filt["generated"], filt["returned"])
    if r.output == "json":
        return JSONResponse(result.to_json(r.truncation, r.format, r.quality))
    headers = {}
    if filt:
        headers["X-Acceptance-Rate"] = str(filt["acceptance_rate"])
    if not kept:
        return error(422, "no image passed the filter; raise filter.oversample", "filter")
    if r.output == "animation":
        fmt = r.animation_format()
        # Hundreds of large frames take seconds to encode: off the event loop, which serves the
        # worker's other requests and its micro-batcher meanwhile.
        data = await asyncio.to_thread(result.to_animation, fmt, r.fps, r.scale)
        return Response(data, media_type=ANIMATION_FORMATS[fmt], headers=headers)
    if r.output == "image":
        if len(result.meta) != 1:
            return error(
                422,
                f"output 'image' returns one image and this request makes {len(result.meta)}: "
                "use output 'grid' or 'json'",
                "output",
            )
        data = result.to_image(r.format, r.quality, r.scale)
    else:
        data = result.to_grid(r.format, r.quality, r.scale)
    return Response(data, media_type=FORMATS[r.format], headers=headers)


_INFLIGHT = [0]  # POST requests being handled by this worker right now


def alone() -> bool:
    """True while at most one POST request is in flight in this worker (the micro-batcher then
    runs small engine calls on the event loop: see serving/batcher.py)."""
    return _INFLIGHT[0] <= 1


def endpoint(path: str, model: type[BaseModel], run: Run):
    name = path.strip("/")

    async def handle(request: Request) -> Response:
        _INFLIGHT[0] += 1
        try:
            return await _handle(request)
        except Exception:  # a defect of ours: logged, answered in the error shape
            log.exception("unexpected error on %s %s", request.method, path)
            return error(500, "internal server error", None)
        finally:
            _INFLIGHT[0] -= 1

    async def _handle(request: Request) -> Response:
        bad = content_type_error(request)
        if bad is not None:
            return bad
        body = await request.body()
        try:
            r = model.model_validate_json(body or b"{}")
        except ValidationError as exc:
            return validation_error(exc)
        pipe = _pipeline()
        try:
            check_output(pipe, r)
            result = await run(pipe, r)
            return await respond(name, r, result)
        except ClientError as exc:
            return error(exc.status, str(exc), exc.field)
        except EngineError as exc:  # logged once by the batcher
            return error(
                503,
                f"{exc}; retry shortly",
                None,
                headers={"Retry-After": str(EngineError.retry_after_s)},
            )

    handle.__name__ = name
    return handle


async def models(request: Request) -> Response:
    return JSONResponse(_pipeline().describe())


async def docs(request: Request) -> Response:
    return JSONResponse(openapi.spec(tuple(_pipeline().models)))


STATIC = Path(__file__).with_name("static")
# The playground page (serving/static/): served as files, open without the API key (it holds no
# data; its API calls send the key the user types). BentoML's Swagger UI keeps "/".
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'",
}


def page_file(route: Route):
    path = STATIC / route.file
    data = path.read_bytes()
    media_type = MEDIA_TYPES[path.suffix]

    async def serve(request: Request) -> Response:
        return Response(data, media_type=media_type, headers=_PAGE_HEADERS)

    return serve


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own answers (405 for a method a route does not take) in the error shape."""
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return error(
            405,
            f"{request.method} is not allowed on {request.url.path}: use {allowed}",
            "method",
            headers=exc.headers,
        )
    return error(exc.status_code, str(exc.detail), None, headers=exc.headers)


def handler(route: Route):
    if route.request is not None:
        return endpoint(route.path, route.request, RUNS[route.path])
    if route.file is not None:
        return page_file(route)
    return {"models": models, "docs": docs}[route.name]


def create_app() -> Starlette:
    routes = [
        StarletteRoute(r.path, handler(r), methods=[r.method]) for r in ROUTES if not r.bentoml
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


APP = create_app()
