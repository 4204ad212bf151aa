"""The middleware chain is BentoML's, declared once: API requests land in BentoML's request series,
and a middleware added with ``add_asgi_middleware`` sees the API routes."""

from __future__ import annotations

import re

from serving.service import GanService
from tests.serving.conftest import in_process, serving_env


def _series(text: str, name: str, endpoint: str, code: int) -> float:
    """The value of BentoML's ``name`` series for ``endpoint`` and status ``code`` (0 if absent)."""
    total = 0.0
    for labels, value in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        if f'endpoint="{endpoint}"' in labels and f'http_response_code="{code}"' in labels:
            total += float(value)
    return total


def test_api_requests_are_counted_in_bentomls_request_series(bundle_dirs, names):
    with in_process(serving_env([bundle_dirs["dcgan"]])) as c:
        before = c.get("/metrics").text
        for seed in range(3):
            assert (
                c.post("/generate", json={"model": names["dcgan"], "seed": seed}).status_code == 200
            )
        assert c.post("/generate", json={"model": names["dcgan"], "n": 0}).status_code == 422
        assert c.get("/models").status_code == 200
        after = c.get("/metrics").text
    for name in ("bentoml_service_request_total", "bentoml_service_request_duration_seconds_count"):
        grew = {
            (path, code): _series(after, name, path, code) - _series(before, name, path, code)
            for path, code in (("/generate", 200), ("/generate", 422), ("/models", 200))
        }
        assert grew == {("/generate", 200): 3, ("/generate", 422): 1, ("/models", 200): 1}, name
    assert re.search(r'bentoml_service_request_in_progress\{[^}]*endpoint="/generate"', after)
    assert re.search(r'^ganforge_images_generated_total\{[^}]*endpoint="generate"', after, re.M)


class _Recorder:
    """A middleware a later change might add: records the paths it saw."""

    seen: list[str] = []

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            _Recorder.seen.append(scope["path"])
        await self.app(scope, receive, send)


def test_a_middleware_added_to_the_service_covers_the_api_routes(bundle_dirs, names):
    GanService.add_asgi_middleware(_Recorder)
    try:
        with in_process(serving_env([bundle_dirs["dcgan"]])) as c:
            assert c.post("/generate", json={"model": names["dcgan"]}).status_code == 200
            assert c.get("/models").status_code == 200
            assert c.post("/generate", json={"model": names["dcgan"], "n": 0}).status_code == 422
    finally:
        GanService.middlewares.remove((_Recorder, {}))
    assert _Recorder.seen.count("/generate") == 2 and "/models" in _Recorder.seen
