"""Client mistakes the service answers with 4xx (torch-free)."""


class ClientError(Exception):
    """A request the client must fix; ``status`` is the HTTP code, ``field`` the offending field."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status, self.field = status, field
