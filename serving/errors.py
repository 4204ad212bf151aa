"""Errors the service answers with a status code, and the one error body (torch-free).

Every error ganforge answers, from a handler, a middleware or BentoML's request timeout, is built
by :func:`error_response`: JSON ``{"error": what is wrong and what is allowed, "field": the
offending field or null, "detail"?: validation details}`` (``schemas.ErrorBody`` documents it).
"""

from __future__ import annotations

import json
from typing import Any


class ClientError(Exception):
    """A request the client must fix; ``status`` is the HTTP code, ``field`` the offending field."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status, self.field = status, field


class EngineError(RuntimeError):
    """The engine failed on a call (ONNX Runtime error, device out of memory): answered 503 with
    ``Retry-After``; the server keeps serving."""

    status = 503
    retry_after_s = 1


class ErrorResponse:
    """An ASGI response carrying the error body; ``await it(scope, receive, send)``."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ):
        body: dict[str, Any] = {"error": message, "field": field}
        if detail is not None:
            body["detail"] = detail
        self.status_code, self.body = status, json.dumps(body).encode()
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
        ]

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.headers})  # fmt: skip
        await send({"type": "http.response.body", "body": self.body})
