"""``gan-export import``'s writer: an external generator's checked source -> a bundle folder,
written atomically like an export (temp folder, then rename; nothing is left on failure).

The checks each source needs live beside it (:mod:`export.import_torch`, :mod:`export.import_onnx`);
what they share lives in :mod:`export.importer`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from export.exporter import (
    CALIBRATION_N,
    PARITY_BATCHES,
    PARITY_TOL,
    RENDER,
    _calibrate,
    parse_formats,
    tool_versions,
    write_atomically,
)
from export.import_onnx import onnx_source, write_onnx
from export.import_torch import torchscript_source, tutorial_source, write_torch
from export.importer import Signature, source_format
from gancore import sampling
from gancore.bundle import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file
from gancore.errors import ExportError
from training.threads import torch_threads


def import_generator(
    generator: str | Path,
    out: str | Path,
    discriminator: str | Path | None = None,
    signature: Signature | None = None,
    formats=None,
    name: str | None = None,
    calibration_n: int = CALIBRATION_N,
    overwrite: bool = False,
    progress=None,
    before_writing=None,
) -> Path:
    """Import an external generator (and discriminator) into a bundle folder ``out``.
    ``before_writing(resolution)``: a last check once the source is read (the gate's preflight)."""
    say = progress or (lambda msg: None)
    generator, out = Path(generator), Path(out)
    disc = Path(discriminator) if discriminator is not None else None
    if out.exists() and not overwrite:
        raise ExportError(f"{str(out)!r} already exists; pass --overwrite to replace it")
    if calibration_n < 100:
        raise ExportError(f"calibration needs at least 100 samples, got {calibration_n}")
    fmt = source_format(generator)
    if fmt == "state_dict" and signature is not None:
        raise ExportError(
            "a pytorch/examples state dict carries its own sizes: --kind, --latent-dim, --classes, "
            "--range and --layout are for ONNX and TorchScript generators"
        )
    if fmt != "state_dict":
        if signature is None:
            raise ExportError(
                f"{generator.name!r} is {fmt}: declare its signature with --kind dcgan|cgan and "
                "--latent-dim N (and --classes for cgan)"
            )
        signature.check()
    if fmt == "onnx":
        if formats is not None and tuple(parse_formats(formats)) != ("onnx",):
            raise ExportError("an ONNX generator is imported as ONNX only (--formats onnx)")
        formats = ("onnx",)
    else:
        formats = parse_formats(formats or "onnx,torchscript")
        if "pt2" in formats:
            raise ExportError("--formats for imported generators: onnx[,torchscript]")
    with torch_threads(1):
        if fmt == "state_dict":
            src = tutorial_source(generator, disc)
        elif fmt == "torchscript":
            src = torchscript_source(generator, disc, signature)
        else:
            src = onnx_source(generator, disc, signature)
        if before_writing is not None:
            before_writing(src.resolution)
        return write_atomically(out, lambda tmp: _build(tmp, src, fmt, signature, generator, disc,
                                               formats, name or out.name, calibration_n, say))  # fmt: skip


def _build(tmp, src, fmt, sig, generator, disc, formats, name, calibration_n, say) -> None:
    t0 = time.perf_counter()
    if fmt == "onnx":
        parts = write_onnx(tmp, src, sig, say)
    else:
        parts = write_torch(tmp, src, formats, say)
    files = {
        f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size} for f in sorted(tmp.iterdir())
    }
    worst = max(v for g in parts["parity"].values() for f in g.values() for v in f.values())
    fused = parts["fused"]
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "kind": src.kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "image": {
            "channels": src.channels,
            "resolution": src.resolution,
            "range": [-1.0, 1.0],
            "layout": "NCHW",
            "dtype": "float32",
        },
        "latent_dim": src.latent_dim,
        "latent_code": None,
        "num_classes": src.num_classes,
        "class_names": list(src.class_names),
        "num_ws": None,
        "w_dim": None,
        "w_avg_file": None,
        "style_ranges": None,
        "dataset": {},
        "formats": list(formats),
        "graphs": parts["graphs"],
        "files": files,
        "parity": {
            "reference": "the imported file run as-is ("
            + ("eager PyTorch" if fmt != "onnx" else "ONNX Runtime, adapters in numpy")
            + ")",
            "tolerance": PARITY_TOL,
            "batches": list(PARITY_BATCHES),
            "max_abs_diff": worst,
            "per_graph": parts["parity"],
            "fused": {
                "graph": RENDER,
                "reference": "the bundle's separate graphs of the same format: image vs "
                "generator(z[, label]), logit vs discriminator(that image[, label])",
                "batches": list(PARITY_BATCHES),
                "max_abs_diff": max(
                    (v for f in fused.values() for o in f.values() for v in o.values()),
                    default=None,
                ),
                "per_format": fused,
            }
            if fused
            else None,
        },
        "sampling": {
            "seed_rule": sampling.SEED_RULE,
            "truncation": sampling.TRUNCATION_RULE_Z,
            "label_rule": sampling.LABEL_RULE if src.num_classes else None,
            "noise": None,
        },
        "discriminator": {"minibatch_std": None} if src.D is not None else None,
        "filters": None,
        "source": {
            "imported": True,
            "generator": str(generator.resolve()),
            "generator_sha256": sha256_file(generator),
            "discriminator": str(disc.resolve()) if disc else None,
            "discriminator_sha256": sha256_file(disc) if disc else None,
            **src.source,
        },
        "versions": tool_versions(),
        "export_seconds": {"total": round(time.perf_counter() - t0, 2)},
    }
    _write_manifest(tmp, manifest)
    if src.D is not None:
        say(f"calibrating the quality filters on {calibration_n} samples")
        manifest["filters"] = _calibrate(tmp, calibration_n)
        _write_manifest(tmp, manifest)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
