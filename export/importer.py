"""``gan-export import``: a generator trained elsewhere becomes a ganforge bundle.

Three sources:

- a pytorch/examples DCGAN state dict (``netG_epoch_N.pth``, optionally ``netD_epoch_N.pth``):
  the network is rebuilt (:mod:`export.tutorial_dcgan`) and exported like a ganforge run;
- a TorchScript generator (``.ts``) and an ONNX generator (``.onnx``) with a declared
  :class:`Signature` (kind, latent size, classes, value range, layout), optionally with a
  discriminator of the same format.

Whatever the source, the bundle's graphs speak the bundle contract: ``generator(z [N, latent]
float32[, label [N] int64]) -> image [N, C, R, R]`` in [-1, 1], ``discriminator(image[, label]) ->
logit [N]``. A source that differs (z as ``[N, latent, 1, 1]``, int32 labels, NHWC output, a
[0, 1] range, a logit ``[N, 1]``, a final Sigmoid) is wrapped by exact adapters, and parity checks
that the wrapped graphs equal the source. Everything that can be checked is checked before
anything is written; the bundle is written into a temp folder and renamed at the end, as an export.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.exporter import (
    CALIBRATION_N,
    PARITY_BATCHES,
    PARITY_TOL,
    RENDER,
    SUFFIX,
    GraphSpec,
    _calibrate,
    _CondRender,
    _quiet,
    _Render,
    check_fused,
    check_parity,
    export_onnx,
    export_torchscript,
    parse_formats,
    tool_versions,
)
from gancore import sampling
from gancore.bundle import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file
from gancore.errors import ExportError
from training.threads import torch_threads

KINDS = ("dcgan", "cgan")
LAYOUTS = ("nchw", "nhwc")
SOURCES = {".pth": "state_dict", ".pt": "state_dict", ".onnx": "onnx", ".ts": "torchscript"}
PROBE_SEEDS = range(16)  # sample latents every import runs before writing anything
RANGE_SLACK = 1e-3  # of the declared range's width: float rounding at the ends is not a mismatch
ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}

log = logging.getLogger(__name__)


@dataclass
class Signature:
    """What an ONNX or TorchScript generator takes and returns, as the user declares it."""

    kind: str
    latent_dim: int
    class_names: list[str] = field(default_factory=list)
    value_range: tuple[float, float] = (-1.0, 1.0)
    layout: str = "nchw"

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ExportError(f"--kind {self.kind!r} cannot be imported; choose from {KINDS}")
        if isinstance(self.latent_dim, bool) or not int(self.latent_dim) >= 1:
            raise ExportError(f"--latent-dim must be a positive integer, got {self.latent_dim!r}")
        if self.kind == "cgan" and len(self.class_names) < 2:
            raise ExportError("--kind cgan needs its classes: --classes a,b,c or --num-classes K")
        if self.kind == "dcgan" and self.class_names:
            raise ExportError("--classes / --num-classes are for --kind cgan")
        if len(set(self.class_names)) != len(self.class_names):
            raise ExportError(f"class names must be distinct, got {self.class_names}")
        lo, hi = self.value_range
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ExportError(f"--range must be LO,HI with LO < HI, got {lo:g},{hi:g}")
        if self.layout not in LAYOUTS:
            raise ExportError(f"--layout {self.layout!r} unknown; choose from {LAYOUTS}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "latent_dim": int(self.latent_dim),
            "class_names": list(self.class_names),
            "range": [float(v) for v in self.value_range],
            "layout": self.layout,
        }


def parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ExportError(f"--range must be LO,HI (e.g. -1,1 or 0,1), got {text!r}") from None
    return lo, hi


def class_names(classes: str | None, num_classes: int | None) -> list[str]:
    """``--classes a,b,c`` or ``--num-classes K`` (named "0".."K-1")."""
    if classes and num_classes is not None:
        raise ExportError("give --classes or --num-classes, not both")
    if classes:
        return [c.strip() for c in classes.split(",")]
    if num_classes is not None:
        if num_classes < 2:
            raise ExportError(f"--num-classes must be at least 2, got {num_classes}")
        return [str(i) for i in range(num_classes)]
    return []


# -- what a file is ------------------------------------------------------------------------------
def source_format(path: str | Path, what: str = "generator") -> str:
    """``state_dict``, ``torchscript`` or ``onnx`` from the extension, refusing a file whose
    contents are something else."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{what} file {str(path)!r} does not exist")
    fmt = SOURCES.get(path.suffix.lower())
    if fmt is None:
        raise ExportError(
            f"{what} {path.name!r}: unknown extension {path.suffix!r}; expected .pth "
            "(pytorch/examples DCGAN state dict), .ts (TorchScript) or .onnx"
        )
    archive = zipfile.is_zipfile(path)  # torch.save and torch.jit.save both write zip archives
    scripted = archive and _is_torchscript(path)
    found = "a TorchScript module" if scripted else "a PyTorch archive" if archive else None
    if fmt == "onnx" and archive:
        raise ExportError(f"{what} {path.name!r} is {found}, not an ONNX model")
    if fmt == "torchscript" and not scripted:
        raise ExportError(
            f"{what} {path.name!r} is not a TorchScript module (torch.jit.save writes one; "
            f"found {found or 'no PyTorch archive'})"
        )
    if fmt == "state_dict" and scripted:
        raise ExportError(
            f"{what} {path.name!r} is a TorchScript module, not a state dict: name it .ts and "
            "declare its signature (--kind, --latent-dim)"
        )
    return fmt


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())


# -- the checks every source goes through --------------------------------------------------------
def probe_latents(latent_dim: int, num_classes: int, seeds=PROBE_SEEDS):
    z = sampling.z_from_seeds(list(seeds), latent_dim)
    lab = sampling.labels_for_seeds(list(seeds), num_classes)
    return z, lab


def check_images(what: str, images: np.ndarray, n: int, declared=(-1.0, 1.0)) -> None:
    """Images of ``n`` sample latents, after the adapters: ``[n, C, R, R]`` with C in (1, 3),
    finite, in [-1, 1]; a value outside is reported in the generator's ``declared`` range."""
    shape = list(images.shape)
    if images.ndim != 4 or images.shape[0] != n:
        raise ExportError(f"{what} returned shape {shape} for {n} latents, expected [{n}, C, H, W]")
    if images.shape[1] not in (1, 3):
        raise ExportError(
            f"{what} returned {images.shape[1]} channels (shape {shape}); expected 1 or 3 "
            "(wrong --layout?)"
        )
    if images.shape[2] != images.shape[3]:
        raise ExportError(f"{what} returned {shape}: the image must be square (wrong --layout?)")
    bad = ~np.isfinite(images)
    if bad.any():
        raise ExportError(
            f"{what} returned {int(bad.sum())} NaN or infinite values for {n} sample latents; "
            "a generator's images must be finite"
        )
    lo, hi = declared
    found = [(float(v) + 1.0) / 2.0 * (hi - lo) + lo for v in (images.min(), images.max())]
    if images.min() < -1.0 - 2 * RANGE_SLACK or images.max() > 1.0 + 2 * RANGE_SLACK:
        raise ExportError(
            f"{what} returned values in [{found[0]:.4g}, {found[1]:.4g}] for {n} sample latents, "
            f"outside the declared range [{lo:g}, {hi:g}]: pass the generator's real --range"
        )
    if images.min() >= 0.0 and (lo, hi) == (-1.0, 1.0):
        log.warning(
            f"{what}: every value is in [{found[0]:.3g}, {found[1]:.3g}] for {n} sample latents; "
            "if it outputs [0, 1], pass --range 0,1 (served images would be too bright)"
        )


def check_logits(what: str, logits: np.ndarray, n: int) -> None:
    if logits.shape != (n,):
        raise ExportError(
            f"{what} returned shape {list(logits.shape)} for {n} images, expected [{n}]"
        )
    if not np.all(np.isfinite(logits)):
        raise ExportError(f"{what} returned NaN or infinite logits for generated images")


# -- torch sources (the tutorial's state dicts, TorchScript) --------------------------------------
class _ScriptGenerator(nn.Module):
    """A TorchScript generator behind the bundle's contract: z ``[N, latent]`` -> NCHW in [-1, 1]."""

    def __init__(self, net: nn.Module, sig: Signature, z4: bool):
        super().__init__()
        self.net, self.z4 = net, z4
        self.lo, self.hi = sig.value_range
        self.nhwc = sig.layout == "nhwc"

    def _image(self, y: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            y = y.permute(0, 3, 1, 2)
        if (self.lo, self.hi) != (-1.0, 1.0):
            y = (y - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0
        return y

    def _z(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, :, None, None] if self.z4 else z

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self._image(self.net(self._z(z)))


class _ScriptCondGenerator(_ScriptGenerator):
    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._image(self.net(self._z(z), label))


class _ScriptDiscriminator(nn.Module):
    """A TorchScript discriminator fed the bundle's images, mapped back to its own range/layout."""

    def __init__(self, net: nn.Module, sig: Signature):
        super().__init__()
        self.net = net
        self.lo, self.hi = sig.value_range
        self.nhwc = sig.layout == "nhwc"

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if (self.lo, self.hi) != (-1.0, 1.0):
            x = (x + 1.0) * ((self.hi - self.lo) / 2.0) + self.lo
        return x.permute(0, 2, 3, 1) if self.nhwc else x

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self._input(image)).reshape(-1)


class _ScriptCondDiscriminator(_ScriptDiscriminator):
    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.net(self._input(image), label).reshape(-1)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[-1] if text else type(e).__name__)[:300]


def _load_script(path: Path, what: str) -> torch.jit.ScriptModule:
    try:
        with _quiet():
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        raise ExportError(
            f"{what} {path.name!r} cannot be loaded by torch.jit.load: {_first_line(e)}"
        ) from None


@torch.no_grad()
def _script_generator(path: Path, sig: Signature) -> nn.Module:
    """Load and probe a TorchScript generator: z rank 2 or 4, a batch of any size, the range."""
    what = f"generator {path.name}"
    net = _load_script(path, "generator")
    z, lab = probe_latents(sig.latent_dim, sig.num_classes)
    args = () if lab is None else (torch.from_numpy(lab),)
    cls = _ScriptCondGenerator if sig.num_classes else _ScriptGenerator
    errors = []
    for z4 in (False, True):
        g = cls(net, sig, z4).eval()
        try:
            with _quiet():
                y = g(torch.from_numpy(z[:1]), *(a[:1] for a in args))
        except Exception as e:
            shape = f"[1, {sig.latent_dim}" + (", 1, 1]" if z4 else "]")
            errors.append(f"z {shape}: {_first_line(e)}")
            continue
        try:
            with _quiet():
                y = g(torch.from_numpy(z), *args)
        except Exception as e:
            raise ExportError(
                f"{what} runs at batch 1 but fails at batch {len(z)} ({_first_line(e)}): it "
                "has a fixed batch of 1; re-export it with a dynamic batch (torch.jit.script, or "
                "torch.jit.trace of a model without batch-size constants)"
            ) from None
        if not isinstance(y, torch.Tensor):
            raise ExportError(f"{what} returned {type(y).__name__}, expected one image tensor")
        check_images(what, y.float().numpy(), len(z), sig.value_range)
        return g
    raise ExportError(
        f"{what} does not take z for --kind {sig.kind} --latent-dim {sig.latent_dim}"
        + (" and int64 labels" if sig.num_classes else "")
        + ": "
        + "; ".join(errors)
    )


@torch.no_grad()
def _script_discriminator(path: Path, sig: Signature, G: nn.Module) -> nn.Module:
    what = f"discriminator {path.name}"
    net = _load_script(path, "discriminator")
    d = (_ScriptCondDiscriminator if sig.num_classes else _ScriptDiscriminator)(net, sig).eval()
    z, lab = probe_latents(sig.latent_dim, sig.num_classes)
    args = () if lab is None else (torch.from_numpy(lab),)
    images = G(torch.from_numpy(z), *args)
    try:
        with _quiet():
            logits = d(images, *args)
    except Exception as e:
        raise ExportError(f"{what} cannot score the generator's images: {_first_line(e)}") from None
    check_logits(what, logits.numpy(), len(z))
    if logits.min() >= 0.0 and logits.max() <= 1.0:
        # A TorchScript graph cannot be inspected for a final Sigmoid as an ONNX one can.
        log.warning(
            f"{what}: every score is in [0, 1]; the filters need logits (the value before a "
            "final Sigmoid): re-export it without the Sigmoid if it ends in one"
        )
    return d


@dataclass
class TorchSource:
    """Eager modules behind the bundle contract, and what the manifest says about them."""

    G: nn.Module
    D: nn.Module | None
    kind: str
    latent_dim: int
    channels: int
    resolution: int
    class_names: list[str]
    source: dict[str, Any]
    scripted: bool = False  # TorchScript inside: ONNX through the TorchScript-based exporter

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def tutorial_source(generator: Path, discriminator: Path | None) -> TorchSource:
    from export import tutorial_dcgan as tut

    G = tut.load_generator(generator)
    D = None
    if discriminator is not None:
        if source_format(discriminator, "discriminator") != "state_dict":
            raise ExportError(
                f"discriminator {discriminator.name!r}: a tutorial generator takes the tutorial's "
                "discriminator state dict (netD_epoch_N.pth)"
            )
        D = tut.load_discriminator(discriminator)
        if D.nc != G.nc:
            raise ExportError(
                f"discriminator {discriminator.name!r} takes {D.nc} channels, generator "
                f"{generator.name!r} makes {G.nc}"
            )
    if G.nc not in (1, 3):
        raise ExportError(
            f"generator {generator.name!r} makes {G.nc} channels; 1 or 3 can be served"
        )
    with torch.no_grad():
        z, _ = probe_latents(G.nz, 0)
        check_images(f"generator {generator.name}", G(torch.from_numpy(z)).numpy(), len(z))
    sizes = {"nz": G.nz, "ngf": G.ngf, "nc": G.nc} | ({"ndf": D.ndf} if D is not None else {})
    return TorchSource(
        G, D, "dcgan", G.nz, G.nc, tut.RESOLUTION, [],
        {"format": tut.SOURCE, "sizes": sizes},
    )  # fmt: skip


def torchscript_source(generator: Path, discriminator: Path | None, sig: Signature) -> TorchSource:
    G = _script_generator(generator, sig)
    D = None
    if discriminator is not None:
        if source_format(discriminator, "discriminator") != "torchscript":
            raise ExportError(
                f"discriminator {discriminator.name!r}: a TorchScript generator takes a TorchScript "
                "discriminator (.ts)"
            )
        D = _script_discriminator(discriminator, sig, G)
    with torch.no_grad():
        z, lab = probe_latents(sig.latent_dim, sig.num_classes, range(1))
        x = G(torch.from_numpy(z), *(() if lab is None else (torch.from_numpy(lab),)))
    return TorchSource(
        G, D, sig.kind, sig.latent_dim, int(x.shape[1]), int(x.shape[2]), list(sig.class_names),
        {"format": "TorchScript", "declared": sig.to_dict(), "z_shape": "[N, latent, 1, 1]"
         if G.z4 else "[N, latent]"},
        scripted=True,
    )  # fmt: skip


def _specs(src: TorchSource) -> list[GraphSpec]:
    r, c, nz = src.resolution, src.channels, src.latent_dim
    img = ("image", ["batch", c, r, r], "float32")
    z = ("z", ["batch", nz], "float32")
    lab = ("label", ["batch"], "int64")
    cond = src.num_classes > 0
    ins = [z, lab] if cond else [z]
    gen = src.G if src.scripted else _torch_generator(src.G, cond)
    specs = [GraphSpec("generator", gen, ins, [img])]
    if src.D is not None:
        disc = src.D if src.scripted else _torch_discriminator(src.D, cond)
        logit = ("logit", ["batch"], "float32")
        specs.append(GraphSpec("discriminator", disc, [img, lab] if cond else [img], [logit]))
        specs.append(
            GraphSpec(RENDER, (_CondRender if cond else _Render)(gen, disc), ins, [img, logit])
        )
    return specs


def _torch_generator(G: nn.Module, cond: bool) -> nn.Module:
    from export.exporter import _CondGenerator, _Generator

    return _CondGenerator(G) if cond else _Generator(G)


def _torch_discriminator(D: nn.Module, cond: bool) -> nn.Module:
    from export.exporter import _CondDiscriminator, _Discriminator

    return _CondDiscriminator(D) if cond else _Discriminator(D)


def _export_onnx_scripted(spec: GraphSpec, example: tuple, path: Path) -> None:
    """TorchScript inside: torch.export cannot trace it, the TorchScript-based exporter can."""
    import onnx

    names = [n for n, _, _ in spec.inputs] + [n for n, _, _ in spec.outputs]
    with _quiet():
        try:
            traced = torch.jit.trace(spec.module, example, check_trace=False)
            torch.onnx.export(
                traced, example, str(path),
                input_names=[n for n, _, _ in spec.inputs],
                output_names=[n for n, _, _ in spec.outputs],
                dynamo=False,
                dynamic_axes={n: {0: "batch"} for n in names},
            )  # fmt: skip
        except Exception as e:
            raise ExportError(f"ONNX export of {spec.name!r} failed: {_first_line(e)}") from None
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as e:
        raise ExportError(f"exported {path.name} fails the ONNX checker: {str(e)[:300]}") from None


def _write_torch(tmp: Path, src: TorchSource, formats, say) -> dict[str, Any]:
    graphs: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    fused: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    cond = src.num_classes > 0
    specs = _specs(src)
    G = specs[0].module

    def make_images(batch, g):
        z = torch.randn(batch, src.latent_dim, generator=g)
        lab = torch.randint(0, max(src.num_classes, 1), (batch,), generator=g)
        x = G(z, lab) if cond else G(z)
        return (x, lab) if cond else (x,)

    for spec in specs:
        make = make_images if spec.name == "discriminator" else None
        with torch.no_grad():
            example = spec.example(2, gen, src.num_classes, make)
        graphs[spec.name] = {
            "inputs": [_io(i) for i in spec.inputs],
            "outputs": [_io(o) for o in spec.outputs],
            "files": {},
        }
        parity[spec.name] = {}
        for fmt in formats:
            fname = spec.name + SUFFIX[fmt]
            say(f"exporting {spec.name} ({fmt})")
            if fmt == "onnx":
                (_export_onnx_scripted if src.scripted else export_onnx)(spec, example, tmp / fname)
            elif fmt == "torchscript":
                export_torchscript(spec, example, tmp / fname)
            else:
                raise ExportError(f"format {fmt!r} is not available for imported generators")
            with torch.no_grad():
                parity[spec.name][fmt] = check_parity(spec, fmt, tmp / fname, make, src.num_classes)
            graphs[spec.name]["files"][fmt] = fname
        if spec.name == RENDER:
            for fmt in formats:
                by_graph = {g: graphs[g]["files"][fmt] for g in graphs}
                fused[fmt] = check_fused(spec, fmt, tmp, by_graph, None, src.num_classes)
    if src.D is None:
        graphs["discriminator"] = None
    return {"graphs": graphs, "parity": parity, "fused": fused}


def _io(entry) -> dict[str, Any]:
    return {"name": entry[0], "shape": entry[1], "dtype": entry[2]}


# -- ONNX sources ---------------------------------------------------------------------------------
@dataclass
class OnnxSource:
    G: Any  # onnx.ModelProto of the wrapped generator (bundle names, NCHW, [-1, 1])
    D: Any | None
    G_source: Any  # the user's models, for parity
    D_source: Any | None
    kind: str
    latent_dim: int
    channels: int
    resolution: int
    class_names: list[str]
    source: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _load_onnx(path: Path, what: str):
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:
        raise ExportError(
            f"{what} {path.name!r} is not a valid ONNX model: {_first_line(e)}"
        ) from None
    if not model.graph.node:
        raise ExportError(f"{what} {path.name!r} is not a valid ONNX model: its graph is empty")
    return model


def _tensors(model, which: str) -> list[tuple[str, list[Any], str]]:
    """(name, dims, dtype) of the graph's real inputs (initializers excluded) or outputs."""
    inits = {i.name for i in model.graph.initializer}
    vis = model.graph.input if which == "input" else model.graph.output
    out = []
    for v in vis:
        if v.name in inits:
            continue
        t = v.type.tensor_type
        dims = []
        for d in t.shape.dim:
            dims.append(
                d.dim_param
                if d.HasField("dim_param")
                else d.dim_value
                if d.HasField("dim_value")
                else None
            )
        out.append((v.name, dims, ONNX_DTYPES.get(t.elem_type, f"type {t.elem_type}")))
    return out


def _fmt_dims(dims) -> str:
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in dims) + "]"


def _check_batch(what: str, name: str, dims, role: str) -> None:
    d0 = dims[0]
    if isinstance(d0, int) and d0 > 0:
        raise ExportError(
            f"{what}: {role} {name!r} has a fixed batch of {d0} (shape {_fmt_dims(dims)}); "
            "ganforge batches requests, so the batch axis must be dynamic: re-export with "
            'torch.onnx.export(..., dynamic_shapes={"'
            + name
            + '": {0: torch.export.Dim("batch")}}) '
            '(or dynamic_axes={"' + name + '": {0: "batch"}} with dynamo=False)'
        )


def _onnx_generator_io(model, what: str, sig: Signature):
    """(z input, label input or None, output, z rank): each checked against the declaration."""
    ins, outs = _tensors(model, "input"), _tensors(model, "output")
    want = "z [batch, latent_dim]" + (" and label [batch] int64" if sig.num_classes else "")
    if len(ins) != 1 + (sig.num_classes > 0):
        names = ", ".join(f"{n} {_fmt_dims(d)} {t}" for n, d, t in ins) or "none"
        raise ExportError(
            f"{what} has {len(ins)} inputs ({names}); a {sig.kind} generator takes {want}"
        )
    floats = [i for i in ins if i[2].startswith("float")]
    ints = [i for i in ins if i[2].startswith("int")]
    if len(floats) != 1 or len(ints) != (sig.num_classes > 0):
        names = ", ".join(f"{n} {t}" for n, _, t in ins)
        raise ExportError(f"{what} inputs are {names}; a {sig.kind} generator takes {want}")
    z = floats[0]
    name, dims, dtype = z
    if dtype != "float32":
        raise ExportError(f"{what}: input {name!r} is {dtype}, expected float32")
    if len(dims) not in (2, 4) or (len(dims) == 4 and dims[2:] != [1, 1]):
        raise ExportError(
            f"{what}: input {name!r} has shape {_fmt_dims(dims)}, expected z [batch, "
            f"{sig.latent_dim}] or [batch, {sig.latent_dim}, 1, 1] (is it a generator?)"
        )
    if dims[1] != sig.latent_dim:
        raise ExportError(
            f"{what}: input {name!r} has shape {_fmt_dims(dims)}: latent size {dims[1]}, "
            f"--latent-dim says {sig.latent_dim}"
        )
    _check_batch(what, name, dims, "input")
    label = None
    if sig.num_classes:
        label = ints[0]
        if len(label[1]) != 1 or label[2] not in ("int64", "int32"):
            raise ExportError(
                f"{what}: input {label[0]!r} is {label[2]} {_fmt_dims(label[1])}, "
                "expected label [batch] int64 (or int32)"
            )
        _check_batch(what, label[0], label[1], "input")
    if len(outs) != 1:
        names = ", ".join(n for n, _, _ in outs)
        raise ExportError(
            f"{what} has {len(outs)} outputs ({names}); a generator returns one image"
        )
    out = outs[0]
    if out[2] != "float32":
        raise ExportError(f"{what}: output {out[0]!r} is {out[2]}, expected float32 images")
    if len(out[1]) != 4:
        raise ExportError(
            f"{what}: output {out[0]!r} has shape {_fmt_dims(out[1])}, expected an image "
            f"batch {'[batch, C, H, W]' if sig.layout == 'nchw' else '[batch, H, W, C]'} "
            "(is it a generator?)"
        )
    _check_batch(what, out[0], out[1], "output")
    return z, label, out, len(dims)


def _const(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(array), name)


def _wrap_onnx(
    model, inputs: list[tuple[str, list, str]], outputs: list[tuple[str, list, str]], pre, post
):
    """A model whose graph inputs/outputs are the bundle's (``inputs``/``outputs``), with the
    source graph prefixed ``src/`` in between; ``pre``/``post``: (nodes, initializers) adapters
    from the bundle names to ``src/...`` and back."""
    import onnx
    from onnx import helper

    src = onnx.compose.add_prefix(model, "src/")
    elem = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    g = helper.make_graph(
        list(pre[0]) + list(src.graph.node) + list(post[0]),
        "ganforge_import",
        [helper.make_tensor_value_info(n, elem[t], s) for n, s, t in inputs],
        [helper.make_tensor_value_info(n, elem[t], s) for n, s, t in outputs],
        initializer=list(src.graph.initializer) + list(pre[1]) + list(post[1]),
    )
    out = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    out.functions.extend(src.functions)
    onnx.checker.check_model(out)
    return out


def _wrap_onnx_generator(model, what: str, sig: Signature):
    from onnx import helper

    z, label, out, z_rank = _onnx_generator_io(model, what, sig)
    pre_nodes, inits = [], []
    if z_rank == 4:
        inits.append(_const("adapt/z_shape", np.array([-1, sig.latent_dim, 1, 1], np.int64)))
        pre_nodes.append(helper.make_node("Reshape", ["z", "adapt/z_shape"], ["src/" + z[0]]))
    else:
        pre_nodes.append(helper.make_node("Identity", ["z"], ["src/" + z[0]]))
    if label is not None:
        if label[2] == "int32":
            pre_nodes.append(helper.make_node("Cast", ["label"], ["src/" + label[0]], to=6))
        else:
            pre_nodes.append(helper.make_node("Identity", ["label"], ["src/" + label[0]]))
    post_nodes, y = [], "src/" + out[0]
    if sig.layout == "nhwc":
        post_nodes.append(helper.make_node("Transpose", [y], ["adapt/nchw"], perm=[0, 3, 1, 2]))
        y = "adapt/nchw"
    lo, hi = sig.value_range
    if (lo, hi) != (-1.0, 1.0):
        inits += [
            _const("adapt/lo", np.float32(lo)),
            _const("adapt/scale", np.float32(2.0 / (hi - lo))),
            _const("adapt/one", np.float32(1.0)),
        ]
        post_nodes += [
            helper.make_node("Sub", [y, "adapt/lo"], ["adapt/shifted"]),
            helper.make_node("Mul", ["adapt/shifted", "adapt/scale"], ["adapt/scaled"]),
            helper.make_node("Sub", ["adapt/scaled", "adapt/one"], ["image"]),
        ]
    else:
        post_nodes.append(helper.make_node("Identity", [y], ["image"]))
    ins = [("z", ["batch", sig.latent_dim], "float32")]
    if label is not None:
        ins.append(("label", ["batch"], "int64"))
    img = ("image", ["batch", None, None, None], "float32")
    return _wrap_onnx(model, ins, [img], (pre_nodes, inits), (post_nodes, [])), (
        z,
        label,
        out,
        z_rank,
    )


def _wrap_onnx_discriminator(model, what: str, sig: Signature, channels: int, res: int):
    from onnx import helper

    ins, outs = _tensors(model, "input"), _tensors(model, "output")
    cond = sig.num_classes > 0
    want = "image" + (" and label [batch] int64" if cond else "")
    if len(ins) != 1 + cond:
        raise ExportError(f"{what} has {len(ins)} inputs ({', '.join(n for n, _, _ in ins)}); "
                          f"a {sig.kind} discriminator takes {want}")  # fmt: skip
    images = [i for i in ins if len(i[1]) == 4 and i[2] == "float32"]
    labels = [i for i in ins if i[2] in ("int64", "int32") and len(i[1]) == 1]
    if len(images) != 1 or len(labels) != cond:
        desc = ", ".join(f"{n} {_fmt_dims(d)} {t}" for n, d, t in ins)
        raise ExportError(
            f"{what} inputs are {desc}; a {sig.kind} discriminator takes float32 {want}"
        )
    image, label = images[0], labels[0] if cond else None
    for name, dims, _ in [image] + ([label] if label else []):
        _check_batch(what, name, dims, "input")
    if len(outs) != 1 or outs[0][2] != "float32" or len(outs[0][1]) not in (1, 2):
        desc = ", ".join(f"{n} {_fmt_dims(d)} {t}" for n, d, t in outs)
        raise ExportError(
            f"{what} outputs {desc}; a discriminator returns one float32 score [batch] or [batch, 1]"
        )
    out = outs[0]
    _check_batch(what, out[0], out[1], "output")
    # The filters need logits: a final Sigmoid is dropped (exact) rather than inverted.
    producer = {o: n for n in model.graph.node for o in n.output}.get(out[0])
    y = out[0]
    dropped_sigmoid = producer is not None and producer.op_type == "Sigmoid"
    if dropped_sigmoid:
        y = producer.input[0]
    pre_nodes, inits, x = [], [], "image"
    lo, hi = sig.value_range
    if (lo, hi) != (-1.0, 1.0):
        inits += [_const("adapt/one", np.float32(1.0)), _const("adapt/half_width", np.float32((hi - lo) / 2.0)),
                  _const("adapt/lo", np.float32(lo))]  # fmt: skip
        pre_nodes += [
            helper.make_node("Add", [x, "adapt/one"], ["adapt/plus1"]),
            helper.make_node("Mul", ["adapt/plus1", "adapt/half_width"], ["adapt/scaled"]),
            helper.make_node("Add", ["adapt/scaled", "adapt/lo"], ["adapt/ranged"]),
        ]
        x = "adapt/ranged"
    if sig.layout == "nhwc":
        pre_nodes.append(helper.make_node("Transpose", [x], ["src/" + image[0]], perm=[0, 2, 3, 1]))
    else:
        pre_nodes.append(helper.make_node("Identity", [x], ["src/" + image[0]]))
    if label is not None:
        op = ("Cast", {"to": 6}) if label[2] == "int32" else ("Identity", {})
        pre_nodes.append(helper.make_node(op[0], ["label"], ["src/" + label[0]], **op[1]))
    inits.append(_const("adapt/flat", np.array([-1], np.int64)))
    post = ([helper.make_node("Reshape", ["src/" + y, "adapt/flat"], ["logit"])], [])
    ins_b = [("image", ["batch", channels, res, res], "float32")]
    if cond:
        ins_b.append(("label", ["batch"], "int64"))
    wrapped = _wrap_onnx(model, ins_b, [("logit", ["batch"], "float32")], (pre_nodes, inits), post)
    return wrapped, {"dropped_final_sigmoid": dropped_sigmoid, "source_output": out[0]}


def _ort(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
    except Exception as e:
        raise ExportError(f"ONNX Runtime cannot load the model: {_first_line(e)}") from None


def _run(sess, what: str, *arrays) -> np.ndarray:
    try:
        names = [i.name for i in sess.get_inputs()]
        return sess.run(None, dict(zip(names, arrays)))[0]
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{what} fails to run: {_first_line(e)}") from None


def onnx_source(generator: Path, discriminator: Path | None, sig: Signature) -> OnnxSource:
    what = f"generator {generator.name}"
    src_g = _load_onnx(generator, "generator")
    G, (z, label, out, z_rank) = _wrap_onnx_generator(src_g, what, sig)
    g = _ort(G)
    zs, lab = probe_latents(sig.latent_dim, sig.num_classes)
    args = () if lab is None else (lab,)
    try:
        first = _run(g, what, zs[:1], *(a[:1] for a in args))
    except ExportError as e:
        raise ExportError(f"{e} (at batch 1)") from None
    try:
        images = _run(g, what, zs, *args)
    except ExportError as e:
        raise ExportError(
            f"{e} (at batch {len(zs)}; it runs at batch 1): a batch size baked into the graph? "
            "Re-export it with a dynamic batch (torch.onnx.export(..., dynamic_shapes=...))"
        ) from None
    check_images(what, images, len(zs), sig.value_range)
    if first.shape[1:] != images.shape[1:]:
        raise ExportError(
            f"{what} makes {list(first.shape[1:])} at batch 1 but {list(images.shape[1:])} at batch {len(zs)}"
        )
    channels, res = int(images.shape[1]), int(images.shape[2])
    D = src_d = None
    d_info = None
    if discriminator is not None:
        if source_format(discriminator, "discriminator") != "onnx":
            raise ExportError(
                f"discriminator {discriminator.name!r}: an ONNX generator takes an ONNX "
                "discriminator (.onnx)"
            )
        dwhat = f"discriminator {discriminator.name}"
        src_d = _load_onnx(discriminator, "discriminator")
        D, d_info = _wrap_onnx_discriminator(src_d, dwhat, sig, channels, res)
        check_logits(dwhat, _run(_ort(D), dwhat, images, *args), len(zs))
    info = {
        "format": "ONNX",
        "declared": sig.to_dict(),
        "inputs": {"z": z[0]} | ({"label": label[0]} if label else {}),
        "output": out[0],
        "z_shape": "[N, latent, 1, 1]" if z_rank == 4 else "[N, latent]",
        "discriminator": d_info,
    }
    return OnnxSource(G, D, src_g, src_d, sig.kind, sig.latent_dim, channels, res,
                      list(sig.class_names), info)  # fmt: skip


def _source_reference(model, sig: Signature, role: str, info):
    """The user's graph run as-is, with the adapters done in numpy: the parity reference."""
    sess = _ort(model)
    lo, hi = sig.value_range
    names = [i.name for i in sess.get_inputs()]
    types = {i.name: i.type for i in sess.get_inputs()}

    def feed(x, label):
        arrays = {}
        for n in names:
            if "int" in types[n]:
                arrays[n] = label.astype(np.int32 if "int32" in types[n] else np.int64)
            else:
                arrays[n] = x
        return arrays

    if role == "generator":

        def run(z, label=None):
            x = z[:, :, None, None] if info["z_shape"] == "[N, latent, 1, 1]" else z
            y = sess.run(None, feed(x, label))[0]
            if sig.layout == "nhwc":
                y = y.transpose(0, 3, 1, 2)
            return (y - lo) * (2.0 / (hi - lo)) - 1.0

        return run

    def run_d(image, label=None):
        x = (image + 1.0) * ((hi - lo) / 2.0) + lo
        if sig.layout == "nhwc":
            x = x.transpose(0, 2, 3, 1)
        return sess.run(None, feed(x.astype(np.float32), label))[0].reshape(-1)

    return run_d


def _render_onnx(G, D):
    """G then D in one graph (outputs ``image`` and ``logit``), or None when their opsets differ."""
    import onnx
    from onnx import helper

    if {(o.domain, o.version) for o in G.opset_import} != {
        (o.domain, o.version) for o in D.opset_import
    }:
        return None
    g, d = onnx.compose.add_prefix(G, "g/"), onnx.compose.add_prefix(D, "d/")
    ins = [i for i in G.graph.input]
    nodes = [helper.make_node("Identity", [i.name], ["g/" + i.name]) for i in ins]
    if len(ins) == 2:
        nodes.append(helper.make_node("Identity", ["label"], ["d/label"]))
    nodes += list(g.graph.node)
    nodes.append(helper.make_node("Identity", ["g/image"], ["d/image"]))
    nodes += list(d.graph.node)
    nodes += [
        helper.make_node("Identity", ["g/image"], ["image"]),
        helper.make_node("Identity", ["d/logit"], ["logit"]),
    ]
    graph = helper.make_graph(
        nodes, "ganforge_render", ins, [G.graph.output[0], D.graph.output[0]],
        initializer=list(g.graph.initializer) + list(d.graph.initializer),
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=list(G.opset_import), ir_version=max(G.ir_version, D.ir_version)
    )
    model.functions.extend(list(g.functions) + list(d.functions))
    onnx.checker.check_model(model)
    return model


def _write_onnx(tmp: Path, src: OnnxSource, sig: Signature, say) -> dict[str, Any]:
    import onnx

    graphs: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    fused: dict[str, Any] = {}
    rng = np.random.default_rng(1234)
    r, c, nz = src.resolution, src.channels, src.latent_dim
    img = ("image", ["batch", c, r, r], "float32")
    lab_io = [("label", ["batch"], "int64")] if src.num_classes else []
    z_io = ("z", ["batch", nz], "float32")

    def inputs(b):
        z = rng.standard_normal((b, nz)).astype(np.float32)
        lab = (
            rng.integers(0, max(src.num_classes, 1), b).astype(np.int64)
            if src.num_classes
            else None
        )
        return z, lab

    g_ref = _source_reference(src.G_source, sig, "generator", src.source)
    g_sess = _ort(src.G)
    say("writing generator (onnx)")
    onnx.save(src.G, str(tmp / "generator.onnx"))
    graphs["generator"] = {"inputs": [_io(z_io)] + [_io(x) for x in lab_io], "outputs": [_io(img)],
                           "files": {"onnx": "generator.onnx"}}  # fmt: skip
    parity["generator"] = {"onnx": {}}
    for b in PARITY_BATCHES:
        z, lab = inputs(b)
        args = () if lab is None else (lab,)
        diff = float(np.abs(_run(g_sess, "generator", z, *args) - g_ref(z, lab)).max())
        parity["generator"]["onnx"][str(b)] = diff
        _within("onnx generator", "the source graph", diff, b)
    if src.D is None:
        graphs["discriminator"] = None
        return {"graphs": graphs, "parity": parity, "fused": fused}
    d_ref = _source_reference(src.D_source, sig, "discriminator", src.source["discriminator"])
    d_sess = _ort(src.D)
    onnx.save(src.D, str(tmp / "discriminator.onnx"))
    graphs["discriminator"] = {"inputs": [_io(img)] + [_io(x) for x in lab_io],
                               "outputs": [_io(("logit", ["batch"], "float32"))],
                               "files": {"onnx": "discriminator.onnx"}}  # fmt: skip
    parity["discriminator"] = {"onnx": {}}
    dropped = src.source["discriminator"]["dropped_final_sigmoid"]
    for b in PARITY_BATCHES:
        z, lab = inputs(b)
        args = () if lab is None else (lab,)
        x = _run(g_sess, "generator", z, *args)
        got = _run(d_sess, "discriminator", x, *args)
        ref = d_ref(x, lab)
        if dropped:  # the file ends in a Sigmoid: the bundle's logit through it equals its output
            got = 1.0 / (1.0 + np.exp(-got.astype(np.float64)))
        diff = float(np.abs(got - ref).max())
        parity["discriminator"]["onnx"][str(b)] = diff
        _within("onnx discriminator", "the source graph", diff, b)
    render = _render_onnx(src.G, src.D)
    if render is None:
        log.info("no fused render graph: the generator's and discriminator's opsets differ")
        return {"graphs": graphs, "parity": parity, "fused": fused}
    onnx.save(render, str(tmp / "render.onnx"))
    graphs[RENDER] = {"inputs": [_io(z_io)] + [_io(x) for x in lab_io],
                      "outputs": [_io(img), _io(("logit", ["batch"], "float32"))],
                      "files": {"onnx": "render.onnx"}}  # fmt: skip
    spec = GraphSpec(RENDER, None, [z_io] + lab_io, [img])
    fused["onnx"] = check_fused(spec, "onnx", tmp, {g: graphs[g]["files"]["onnx"] for g in graphs},
                                None, src.num_classes)  # fmt: skip
    return {"graphs": graphs, "parity": parity, "fused": fused}


def _within(what: str, against: str, diff: float, batch: int) -> None:
    if not diff <= PARITY_TOL:
        raise ExportError(
            f"parity check failed: {what} differs from {against} by {diff:.3g} at batch {batch} "
            f"(tolerance {PARITY_TOL}); no bundle written"
        )


# -- the bundle ----------------------------------------------------------------------------------
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
    with torch_threads(1):
        if fmt == "state_dict":
            src = tutorial_source(generator, disc)
        elif fmt == "torchscript":
            src = torchscript_source(generator, disc, signature)
        else:
            src = onnx_source(generator, disc, signature)
        if fmt == "onnx":
            if formats is not None and tuple(parse_formats(formats)) != ("onnx",):
                raise ExportError("an ONNX generator is imported as ONNX only (--formats onnx)")
            formats = ("onnx",)
        else:
            formats = parse_formats(formats or "onnx,torchscript")
            if "pt2" in formats:
                raise ExportError("--formats for imported generators: onnx[,torchscript]")
        if before_writing is not None:
            before_writing(src.resolution)
        return _atomic(out, lambda tmp: _build(tmp, src, fmt, signature, generator, disc,
                                               formats, name or out.name, calibration_n, say))  # fmt: skip


def _atomic(out: Path, build) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        build(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _build(tmp, src, fmt, sig, generator, disc, formats, name, calibration_n, say) -> None:
    t0 = time.perf_counter()
    if fmt == "onnx":
        parts = _write_onnx(tmp, src, sig, say)
    else:
        parts = _write_torch(tmp, src, formats, say)
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
