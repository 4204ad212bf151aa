"""BentoML model store: import a *passing* bundle as a BentoML model, find it again by tag.

The model's folder is a byte-for-byte copy of the bundle (manifest, graphs, gate.json), so
``gancore.bundle.load(bentoml.models.get(tag).path)`` verifies and runs it exactly as before.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from gancore import bundle as bundle_mod
from gancore.errors import BundleError

MODULE = "ganforge.export"


def model_name(name: str) -> str:
    """A valid BentoML model name from a bundle name (lowercase, [a-z0-9_.-])."""
    s = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-._")
    return s or "ganforge-bundle"


def push(bundle_path: str | Path, name: str | None = None) -> str:
    """Import a bundle with a passing, current gate into the BentoML store; returns the tag."""
    path = Path(bundle_path)
    v = bundle_mod.verify(path)
    manifest, manifest_sha, gate = v.manifest, v.manifest_sha256, v.gate
    if not v.deployable:
        raise BundleError(f"refusing to import {str(path)!r} into the BentoML store: {v.reason}")
    import bentoml

    ds = (manifest.get("dataset") or {}).get("dataset") or "unknown"
    labels = {
        "kind": manifest["kind"],
        "dataset": str(ds),
        "gate": "passed",
        "resolution": str(manifest["image"]["resolution"]),
    }
    metadata: dict[str, Any] = {
        "distance": float(gate["distance"]),
        "threshold": float(gate["threshold"]),
        "metric": str(gate.get("metric")),
        "n": int(gate["n"]),
        "manifest_sha256": manifest_sha,
        "bundle_name": manifest["name"],
        "format_version": manifest["format_version"],
        "source_step": manifest.get("source", {}).get("step"),
    }
    with bentoml.models.create(
        model_name(name or manifest["name"]), labels=labels, metadata=metadata, module=MODULE
    ) as model:
        for f in path.iterdir():
            if f.is_file() and not f.name.startswith("."):
                shutil.copy2(f, Path(model.path) / f.name)
    return str(model.tag)


def bundle_path(tag: str) -> Path:
    """The folder of a stored bundle (``name:version`` or ``name`` for the latest)."""
    import bentoml

    try:
        model = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise BundleError(f"no model {tag!r} in the BentoML store ({_home()})") from None
    return Path(model.path)


def list_bundles() -> list[dict[str, Any]]:
    """Stored ganforge bundles: tag, labels, metadata."""
    import bentoml

    out = []
    for m in bentoml.models.list():
        if m.info.module == MODULE:
            out.append(
                {
                    "tag": str(m.tag),
                    "labels": dict(m.info.labels),
                    "metadata": dict(m.info.metadata),
                }
            )
    return out


def _home() -> str:
    import os

    return os.environ.get("BENTOML_HOME", "~/bentoml")
