"""Which bundles the server serves: load, verify, refuse loudly (torch-free).

Bundles come from paths (``GAN_BUNDLES``) and BentoML model-store tags (``GAN_MODEL_TAGS``). Each
is loaded through ``gancore.bundle.load``, which checks every file's sha256 against the manifest and
the gate verdict; a bundle that fails is refused with one log line naming the reason, the others
are still served. Model names are dictionary keys, never paths.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gancore.errors import BundleError
from serving.config import Settings

log = logging.getLogger("ganforge.serving")


class NoModels(RuntimeError):
    """Raised at start-up when no bundle could be served: the server must not start."""


def gate_summary(bundle: Any) -> dict[str, Any]:
    """The gate verdict as /models shows it."""
    gate = bundle.gate or {}
    out: dict[str, Any] = {
        "passed": bool(getattr(bundle, "deployable", False)),
        "verdict": gate.get("verdict", "missing"),
        "reason": getattr(bundle, "gate_reason", None),
    }
    for key in ("metric", "distance", "threshold", "n", "extractor"):
        value = gate.get(key)
        if isinstance(value, (int, float, str)):
            out[key] = value
    return out


def _tag_path(tag: str) -> Path:
    """A model-store tag -> the bundle directory inside the stored model."""
    import bentoml

    model = bentoml.models.get(tag)
    root = Path(model.path)
    if (root / "manifest.json").is_file():
        return root
    found = sorted(p.parent for p in root.glob("*/manifest.json"))
    if len(found) != 1:
        raise BundleError(f"model {tag} does not hold exactly one bundle (found {len(found)})")
    return found[0]


def load_bundles(
    settings: Settings, loader=None, threads: int | None = None, device_id: int = 0
) -> dict[str, Any]:
    """Load every configured bundle; return ``{name: Bundle}``. Raises NoModels if none loads."""
    if loader is None:
        from gancore.bundle import load as loader

    sources: list[tuple[str, Any]] = [(p, lambda p=p: Path(p)) for p in settings.bundles]
    sources += [(f"tag {t}", lambda t=t: _tag_path(t)) for t in settings.model_tags]
    if not sources:
        raise NoModels("no bundles configured: set GAN_BUNDLES (paths) or GAN_MODEL_TAGS (tags)")

    bundles: dict[str, Any] = {}
    for label, where in sources:
        try:
            path = where()
            bundle = loader(
                path,
                backend=settings.backend,
                device=settings.device,
                require_gate=not settings.allow_ungated,
                threads=threads,
                device_id=device_id,
            )
        except (BundleError, OSError, ValueError) as exc:
            log.error("refused bundle %s: %s", label, exc)
            continue
        except Exception as exc:  # a model store error, a broken graph: refuse, keep going
            log.error("refused bundle %s: %s: %s", label, type(exc).__name__, exc)
            continue
        if bundle.name in bundles:
            log.error("refused bundle %s: a model named %r is already served", label, bundle.name)
            continue
        gate = gate_summary(bundle)
        if not gate["passed"]:
            log.warning(
                "SERVING UNGATED BUNDLE %r from %s (GAN_ALLOW_UNGATED=1): development only, "
                "its quality was not verified",
                bundle.name,
                path,
            )
        log.info(
            "serving %r (%s, %dx%d, provider %s) from %s",
            bundle.name,
            bundle.kind,
            bundle.resolution,
            bundle.resolution,
            bundle.provider,
            path,
        )
        bundles[bundle.name] = bundle
    if not bundles:
        raise NoModels(
            f"none of the {len(sources)} configured bundles could be served (see the log lines "
            "above); refusing to start"
        )
    return bundles


def check_bundles(settings: Settings) -> list[str]:
    """Verify bundles without opening runtime sessions (checksums, gate); return the good paths.

    The public service runs this at start so it refuses to start on the same grounds as the
    engine, without holding a second copy of the graphs in memory.
    """
    from gancore.bundle import verify

    paths = list(settings.bundles)
    for tag in settings.model_tags:
        try:
            paths.append(str(_tag_path(tag)))
        except Exception as exc:
            log.error("refused bundle tag %s: %s", tag, exc)
    if not paths:
        raise NoModels("no bundles configured: set GAN_BUNDLES (paths) or GAN_MODEL_TAGS (tags)")
    good = []
    for p in paths:
        try:
            v = verify(p)
        except (BundleError, OSError) as exc:
            log.error("refused bundle %s: %s", p, exc)
            continue
        if v.deployable or settings.allow_ungated:
            good.append(p)
        else:
            log.error("refused bundle %s: %s", p, v.reason)
    if not good:
        raise NoModels(
            f"none of the {len(paths)} configured bundles passes verification (see the lines "
            "above); set GAN_BUNDLES / GAN_MODEL_TAGS to exported, gated bundles"
        )
    return good
