"""``/docs.json``: the OpenAPI 3.1 document of the API, built from the route table
(serving/routes.py) and serving/schemas.py's models.

Every route declares its request model, its JSON response model, its binary ``image/*`` responses
and the error answers it can give, all with the one error shape (serving/errors.py).
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from gancore.images import ANIMATION_FORMATS, FORMATS
from serving import schemas
from serving.routes import ROUTES, Route

REF = "#/components/schemas/{model}"
BINARY = {"schema": {"type": "string", "format": "binary"}}
ERRORS = {
    400: "the body is not JSON or not a JSON object, or the Content-Type header is malformed",
    401: "missing or wrong API key (when GAN_API_KEY is set)",
    404: "unknown model",
    405: "the route does not take this method; `error` names the one it takes",
    413: "request body larger than GAN_MAX_BODY_BYTES",
    415: "Content-Type is not application/json",
    422: "a field is wrong or beyond a limit; `field` names it, `error` says what is allowed",
    503: "the engine failed on this request's batch; retry after Retry-After seconds",
    504: "no answer within the service's traffic timeout",
}
TEXT = {"/metrics": "Prometheus text format"}


def _error(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": ERRORS[status],
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
    }
    if status == 503:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _ok(route: Route) -> dict[str, Any]:
    if route.response is None:
        return _text(TEXT.get(route.path, route.summary))
    ok = {"application/json": {"schema": {"$ref": REF.format(model=route.response.__name__)}}}
    if route.request is None:
        return {"description": route.summary, "content": ok}
    ok.update({media: BINARY for media in FORMATS.values()})
    description = (
        "images: JSON (output 'json', base64 `data`) or one binary picture "
        "(output 'image' or 'grid', in `format`)"
    )
    if route.animated:
        ok.update({media: BINARY for media in ANIMATION_FORMATS.values()})
        description += "; output 'animation': one looping gif or webp"
    return {
        "description": description,
        "content": ok,
        "headers": {
            "X-Acceptance-Rate": {
                "description": "binary output of a filtered request",
                "schema": {"type": "string"},
            }
        },
    }


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": route.name}
    if route.summary:
        op["summary"] = route.summary
    if route.request is not None:
        schema = {"$ref": REF.format(model=route.request.__name__)}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    responses = {"200": _ok(route)}
    if route.path == "/readyz":
        responses["503"] = _text("not ready yet")
    responses.update({str(s): _error(s) for s in route.errors})
    op["responses"] = responses
    return op


def spec(served: tuple[str, ...] = ()) -> dict[str, Any]:
    """The document; ``served``: the model names, listed as the enum of every request's ``model``
    (another name gets the documented 404)."""
    return _spec(tuple(served))


@functools.cache
def _spec(served: tuple[str, ...]) -> dict[str, Any]:
    documented = [r for r in ROUTES if r.documented]
    models = [(r.request, "validation") for r in documented if r.request is not None]
    models += [
        (m, "serialization") for m in dict.fromkeys(r.response for r in documented if r.response)
    ]
    models.append((schemas.ErrorBody, "serialization"))
    _, top = models_json_schema(models, ref_template=REF)
    defs = top.get("$defs", {})
    if served:
        for r in documented:
            if r.request is not None:
                defs[r.request.__name__]["properties"]["model"]["enum"] = list(served)
    paths: dict[str, Any] = {}
    for r in documented:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ganforge",
            "version": "1",
            "description": "GAN image generation from verified bundles. Errors always have the "
            "shape {error, field, detail?}.",
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
