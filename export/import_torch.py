"""Torch sources for ``gan-export import``: the pytorch/examples DCGAN state dicts (rebuilt by
:mod:`export.tutorial_dcgan`) and TorchScript generators, behind the bundle contract, exported like
a ganforge run (ONNX, TorchScript, parity against the eager modules, the fused render graph)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.exporter import (
    RENDER,
    SUFFIX,
    GraphSpec,
    _CondRender,
    _quiet,
    _Render,
    check_fused,
    check_parity,
    export_onnx,
    export_torchscript,
)
from export.importer import (
    Signature,
    check_images,
    check_logits,
    first_line,
    io_entry,
    probe_latents,
    source_format,
)
from gancore.errors import ExportError

log = logging.getLogger(__name__)


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


def _load_script(path: Path, what: str) -> torch.jit.ScriptModule:
    try:
        with _quiet():
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        raise ExportError(
            f"{what} {path.name!r} cannot be loaded by torch.jit.load: {first_line(e)}"
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
            errors.append(f"z {shape}: {first_line(e)}")
            continue
        try:
            with _quiet():
                y = g(torch.from_numpy(z), *args)
        except Exception as e:
            raise ExportError(
                f"{what} runs at batch 1 but fails at batch {len(z)} ({first_line(e)}): it "
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
        raise ExportError(f"{what} cannot score the generator's images: {first_line(e)}") from None
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
            raise ExportError(f"ONNX export of {spec.name!r} failed: {first_line(e)}") from None
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as e:
        raise ExportError(f"exported {path.name} fails the ONNX checker: {str(e)[:300]}") from None


def write_torch(tmp: Path, src: TorchSource, formats, say) -> dict[str, Any]:
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
            "inputs": [io_entry(i) for i in spec.inputs],
            "outputs": [io_entry(o) for o in spec.outputs],
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
