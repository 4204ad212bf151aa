"""Errors the service answers with a status code (torch-free)."""


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
