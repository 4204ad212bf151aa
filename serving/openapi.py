"""``/docs.json``: the OpenAPI 3.1 document of the API, built from serving/schemas.py's models.

Every route declares its request model, its JSON response model and its binary ``image/*``
responses, and the error answers it can give (400, 401, 404, 413, 415, 422, 503), all with the one
error shape. BentoML's own routes (probes, metrics) are listed too.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from gancore.images import FORMATS
from serving import schemas

REF = "#/components/schemas/{model}"
BINARY = {"schema": {"type": "string", "format": "binary"}}
DESCRIPTIONS = {
    "/generate": "n images from seeds seed..seed+n-1 (default 0) or the given seeds, optionally "
    "filtered by the discriminator (top_k, drs)",
    "/generate_conditional": "n images per class; class_label is an index, a name, or a list",
    "/style_mix": "the style-mixing grid: row seeds' images with the col_styles layers taken from "
    "each column seed (StyleGAN-lite; with a latent code, each cell keeps the code of the seed "
    "giving it layer 0)",
    "/interpolate": "steps images from seeds[0] to seeds[1]: slerp in z or lerp in w",
}
ERRORS = {
    400: "the body is not JSON or not a JSON object, or the Content-Type header is malformed",
    401: "missing or wrong API key (when GAN_API_KEY is set)",
    404: "unknown model",
    413: "request body larger than GAN_MAX_BODY_BYTES",
    415: "Content-Type is not application/json",
    422: "a field is wrong or beyond a limit; `field` names it, `error` says what is allowed",
    503: "the engine failed on this request's batch; retry after Retry-After seconds",
}


def _error(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": ERRORS[status],
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
    }
    if status == 503:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


def _text(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }


def spec(served: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The document; ``served``: the model names, listed as the enum of every request's ``model``
    (another name gets the documented 404)."""
    if served is None:
        try:
            from serving.app import bound

            served = tuple(bound().pipeline.models)
        except RuntimeError:  # no worker service in this process
            served = ()
    return _spec(tuple(served))


@functools.cache
def _spec(served: tuple[str, ...]) -> dict[str, Any]:
    models = [(m, "validation") for m in schemas.REQUESTS.values()]
    models += [
        (m, "serialization")
        for m in (schemas.ImagesResponse, schemas.ModelsResponse, schemas.ErrorBody)
    ]
    _, top = models_json_schema(models, ref_template=REF)
    defs = top.get("$defs", {})
    if served:
        for model in schemas.REQUESTS.values():
            defs[model.__name__]["properties"]["model"]["enum"] = list(served)
    paths: dict[str, Any] = {}
    for path, model in schemas.REQUESTS.items():
        name = path.strip("/")
        ok = {"application/json": {"schema": {"$ref": REF.format(model="ImagesResponse")}}}
        ok.update({media: BINARY for media in FORMATS.values()})
        paths[path] = {
            "post": {
                "operationId": name,
                "summary": DESCRIPTIONS[path],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}
                    },
                },
                "responses": {
                    "200": {
                        "description": "images: JSON (output 'json', base64 `data`) or one "
                        "binary picture (output 'image' or 'grid', in `format`)",
                        "content": ok,
                        "headers": {
                            "X-Acceptance-Rate": {
                                "description": "binary output of a filtered request",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    **{str(s): _error(s) for s in (400, 401, 404, 413, 415, 422, 503)},
                },
            }
        }
    paths["/models"] = {
        "get": {
            "operationId": "models",
            "summary": "what is served: kind, resolution, classes, style ranges, gate verdict, "
            "provider; the limits and formats",
            "responses": {
                "200": {
                    "description": "the served models",
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="ModelsResponse")}}
                    },
                },
                "401": _error(401),
            },
        }
    }
    paths["/livez"] = {"get": {"operationId": "livez", "responses": {"200": _text("alive")}}}
    paths["/readyz"] = {
        "get": {
            "operationId": "readyz",
            "responses": {"200": _text("ready"), "503": _text("not ready yet")},
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (BentoML's and ganforge_*)",
            "responses": {"200": _text("Prometheus text format"), "401": _error(401)},
        }
    }
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
