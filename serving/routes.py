"""The route table: every path the service answers, declared once (torch-free).

The request layer (serving/app.py) dispatches on it, ``/docs.json`` (serving/openapi.py) documents
it, the API-key middleware reads which paths are open from it, and the playground page gets the
API's paths from it. BentoML's own routes are listed too, so that the document and the middleware
know them; BentoML serves them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from serving import schemas

API_ERRORS = (400, 401, 404, 405, 413, 415, 422, 503, 504)


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    name: str  # the handler and the OpenAPI operationId
    summary: str = ""
    request: type[BaseModel] | None = None  # the JSON body of a POST
    response: type[BaseModel] | None = None  # the JSON answer (None: text or a file)
    errors: tuple[int, ...] = (401, 405)
    open: bool = False  # answered without the API key
    documented: bool = True  # listed in /docs.json
    bentoml: bool = False  # served by BentoML itself, not by serving/app.py
    file: str | None = None  # a playground file under serving/static/
    animated: bool = False  # answers output 'animation' (image/gif, image/webp)


def _api(path: str, request: type[BaseModel], summary: str, animated: bool = False) -> Route:
    return Route(
        path,
        "POST",
        path.strip("/"),
        summary,
        request,
        schemas.ImagesResponse,
        API_ERRORS,
        animated=animated,
    )


_PAGE = "text/html; charset=utf-8"
ROUTES: tuple[Route, ...] = (
    _api(
        "/generate",
        schemas.GenerateRequest,
        "n images from seeds seed..seed+n-1 (default 0) or the given seeds, optionally filtered "
        "by the discriminator (top_k, drs)",
    ),
    _api(
        "/generate_conditional",
        schemas.GenerateConditionalRequest,
        "n images per class; class_label is an index, a name, or a list",
    ),
    _api(
        "/style_mix",
        schemas.StyleMixRequest,
        "the style-mixing grid: row seeds' images with the col_styles layers taken from each "
        "column seed (StyleGAN-lite; with a latent code, each cell keeps the code of the seed "
        "giving it layer 0)",
    ),
    _api(
        "/interpolate",
        schemas.InterpolateRequest,
        "steps images from seeds[0] to seeds[1]: slerp in z or lerp in w; or, with output "
        "'animation', a looping gif/webp walk through two or more seeds (frames per segment, "
        "loop back to the first seed, fps)",
        animated=True,
    ),
    Route(
        "/models",
        "GET",
        "models",
        "what is served: kind, resolution, classes, style ranges, gate verdict, provider; the "
        "limits and formats",
        response=schemas.ModelsResponse,
    ),
    Route("/docs.json", "GET", "docs", "this document", documented=False),
    Route("/playground", "GET", "page", open=True, documented=False, file="playground.html"),
    Route(
        "/playground/playground.js",
        "GET",
        "page",
        open=True,
        documented=False,
        file="playground.js",
    ),  # fmt: skip
    Route(
        "/playground/playground.css",
        "GET",
        "page",
        open=True,
        documented=False,
        file="playground.css",
    ),  # fmt: skip
    Route("/livez", "GET", "livez", "alive", errors=(), open=True, bentoml=True),
    Route("/readyz", "GET", "readyz", "ready (503: not yet)", errors=(), open=True, bentoml=True),
    Route("/healthz", "GET", "healthz", open=True, documented=False, bentoml=True),
    Route(
        "/metrics", "GET", "metrics", "Prometheus metrics (BentoML's and ganforge_*)", bentoml=True
    ),  # fmt: skip
)

API = tuple(r for r in ROUTES if r.request is not None)
OPEN_PATHS = frozenset(r.path for r in ROUTES if r.open)
MEDIA_TYPES = {
    ".html": _PAGE,
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
