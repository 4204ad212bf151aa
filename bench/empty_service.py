"""The cheapest BentoML service there is: one async API that echoes its JSON fields.

bench/serve_load.py serves it with the same workers, client and load as ganforge's service to
measure what BentoML itself costs per request on this machine: no model, no PNG, no engine hop.
It carries the same BentoML fix as the real service (serving/bentoml_fixes.py) so the two are
compared on equal terms.
"""

from __future__ import annotations

import os

import bentoml

from serving import bentoml_fixes

bentoml_fixes.install()


@bentoml.service(
    name="empty_service",
    workers=int(os.environ.get("EMPTY_WORKERS", "1")),
    traffic={"timeout": 300},
)
class EmptyService:
    @bentoml.api
    async def generate(self, model: str, seed: int = 0, n: int = 1) -> dict:
        return {"model": model, "seed": seed, "n": n}
