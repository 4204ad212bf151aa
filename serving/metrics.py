"""Prometheus counters next to BentoML's own /metrics (created lazily, torch-free).

Metric objects are created on first use, inside the worker, so ``prometheus_client`` sees the
``PROMETHEUS_MULTIPROC_DIR`` BentoML sets there and every worker's counts are aggregated into
one /metrics page.
"""

from __future__ import annotations

import functools

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 256, 512)


@functools.cache
def _metrics():
    import prometheus_client as prom

    return {
        "images": prom.Counter(
            "ganforge_images_generated",
            "Images returned to clients",
            ["model", "endpoint"],
        ),
        "candidates": prom.Counter(
            "ganforge_filter_candidates",
            "Images generated as candidates for a quality filter",
            ["model", "method"],
        ),
        "accepted": prom.Counter(
            "ganforge_filter_accepted",
            "Candidates a quality filter kept",
            ["model", "method"],
        ),
        "batch": prom.Histogram(
            "ganforge_engine_batch_size",
            "Rows per engine call, as the micro-batcher merged concurrent requests",
            ["api", "model"],
            buckets=BATCH_BUCKETS,
        ),
    }


@functools.cache
def _child(kind: str, *labels: str):
    """The labelled child of metric ``kind``, looked up once (``labels()`` costs a lock and a
    dict build on every call)."""
    return _metrics()[kind].labels(*labels)


def images_returned(model: str, endpoint: str, count: int) -> None:
    if count:
        _child("images", model, endpoint).inc(count)


def filtered(model: str, method: str, generated: int, accepted: int) -> None:
    _child("candidates", model, method).inc(generated)
    _child("accepted", model, method).inc(accepted)


def engine_batch(api: str, model: str, rows: int) -> None:
    _child("batch", api, model).observe(rows)
