"""Training run -> bundle: graphs (ONNX, TorchScript, optional torch.export .pt2) from the EMA
generator and the discriminator, parity against eager PyTorch, filter calibration, manifest.

Besides the graphs the loader runs (``gancore.bundle.GRAPHS``), every bundle holds ``render``: the
generator (StyleGAN: the synthesis network) and the discriminator fused into one graph that returns
``image`` and ``logit``, so a server on a GPU scores an image without copying it to the host and
back between two sessions. Its parity is checked twice: against eager PyTorch, and against the
bundle's own separate graphs of the same format (``parity.fused``).

Everything is written into a temp folder next to the target and renamed at the end: a failed
parity check (or any error) leaves no bundle behind.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import platform
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gancore import filters, sampling
from gancore.bundle import FORMAT, FORMAT_VERSION, GRAPHS, MANIFEST, sha256_file
from gancore.errors import ExportError
from training.threads import torch_threads

FORMATS = ("onnx", "torchscript", "pt2")
DEFAULT_FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2"}
PARITY_BATCHES = (1, 7, 64)
PARITY_TOL = 1e-4
CALIBRATION_SEED0 = 1_000_000_000  # calibration seeds never overlap the gate's seeds (0..N-1)
CALIBRATION_N = 10_000
MBSTD_BATCHES = 16
MAX_BATCH = 65_536
RENDER = "render"  # the fused G -> D graph; optional for the loader (not in bundle.GRAPHS)

log = logging.getLogger(__name__)


def parse_formats(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for f in (s.strip().lower() for s in items):
        if f not in FORMATS:
            raise ExportError(f"unknown format {f!r}; choose from {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    if "onnx" not in out:
        # The server, the gate and the filter calibration all run the ONNX graphs.
        raise ExportError("formats must include 'onnx' (the gate and the server run it)")
    return tuple(out)


# -- graph wrappers: plain positional forwards with the bundle's input names --------------------
class _Generator(nn.Module):
    def __init__(self, g: nn.Module):
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.g(z)


class _CondGenerator(_Generator):
    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.g(z, label)


class _Synthesis(nn.Module):
    def __init__(self, s: nn.Module):
        super().__init__()
        self.s = s

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.s(ws)  # no noise argument: the constant noise buffers are used


class _Discriminator(nn.Module):
    def __init__(self, d: nn.Module):
        super().__init__()
        self.d = d

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.d(image)


class _CondDiscriminator(_Discriminator):
    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.d(image, label)


# The fused graphs: ``g`` is the generator wrapper above (or the synthesis one), ``d`` the
# discriminator. Forward signatures carry the bundle's input names (the ONNX exporter keys the
# dynamic batch dimension by them), hence one small class per signature.
class _Render(nn.Module):
    def __init__(self, g: nn.Module, d: nn.Module):
        super().__init__()
        self.g, self.d = g, d

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.g(z)
        return image, self.d(image)


class _CondRender(_Render):
    def forward(self, z: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        image = self.g(z, label)
        return image, self.d(image, label)


# StyleGAN-lite's synthesis has no output squashing: the served image is clipped to [-1, 1]
# (gancore.sampling.synthesize), so the fused graph clips before D scores it, as the server does.
class _StyleRender(_Render):
    def forward(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        image = self.g(ws).clamp(-1.0, 1.0)
        return image, self.d(image)


class _CondStyleRender(_Render):
    def forward(self, ws: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        image = self.g(ws).clamp(-1.0, 1.0)  # the class reaches ws through mapping, D directly
        return image, self.d(image, label)


@dataclass
class GraphSpec:
    name: str
    module: nn.Module
    inputs: list[tuple[str, list[Any], str]]  # (name, shape with "batch", dtype)
    outputs: list[tuple[str, list[Any], str]]

    def example(self, batch: int, gen: torch.Generator, num_classes: int, make=None):
        if make is not None:
            return make(batch, gen)
        out = []
        for _, shape, dtype in self.inputs:
            dims = [batch if d == "batch" else d for d in shape]
            if dtype == "int64":
                out.append(torch.randint(0, num_classes, dims, generator=gen))
            else:
                out.append(torch.randn(dims, generator=gen))
        return tuple(out)


def _bake(module: nn.Module) -> nn.Module:
    """A CPU eval copy with spectral-norm parametrizations folded into plain weights."""
    m = copy.deepcopy(module).cpu().eval()
    for sub in m.modules():
        if nn.utils.parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations.keys()):
                nn.utils.parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@torch.no_grad()
def measure_mbstd(G: nn.Module, D: nn.Module, cfg, batches: int = MBSTD_BATCHES) -> float:
    """Mean minibatch-stddev statistic of D over generated batches of 64 (seeded, per-seed z)."""
    seen: list[float] = []

    def hook(mod, args):
        seen.append(float(mod.statistic(args[0]).mean()))

    h = D.mbstd.register_forward_pre_hook(hook)
    try:
        for b in range(batches):
            seeds = range(2_000_000_000 + 64 * b, 2_000_000_000 + 64 * (b + 1))
            z = torch.from_numpy(sampling.z_from_seeds(seeds, cfg.latent_dim))
            lab = None
            if cfg.num_classes > 0:
                lab = torch.from_numpy(sampling.labels_for_seeds(list(seeds), cfg.num_classes))
            img = G(z, lab) if cfg.num_classes > 0 else G(z)
            D(img, lab) if cfg.num_classes > 0 else D(img)
    finally:
        h.remove()
    return float(np.mean(seen))


def graph_specs(G: nn.Module, D: nn.Module, cfg) -> list[GraphSpec]:
    """The loader's graphs (``GRAPHS[kind]``, in order), then the fused ``render`` graph."""
    r, c, nz = cfg.resolution, cfg.channels, cfg.latent_dim
    img = ("image", ["batch", c, r, r], "float32")
    logit = ("logit", ["batch"], "float32")
    z = ("z", ["batch", nz], "float32")
    lab = ("label", ["batch"], "int64")
    cond = cfg.num_classes > 0
    specs = []
    if cfg.kind in ("dcgan", "cgan"):
        gen = _CondGenerator(G) if cond else _Generator(G)
        specs.append(GraphSpec("generator", gen, [z, lab] if cond else [z], [img]))
        render = (_CondRender if cond else _Render)(gen, D)
        render_inputs = [z, lab] if cond else [z]
    else:
        mapping = _CondGenerator(G.mapping) if cond else _Generator(G.mapping)
        specs.append(
            GraphSpec(
                "mapping",
                mapping,
                [z, lab] if cond else [z],
                [("w", ["batch", cfg.w_dim], "float32")],
            )
        )
        ws = ("ws", ["batch", cfg.num_ws, cfg.w_dim], "float32")
        synthesis = _Synthesis(G.synthesis)
        specs.append(GraphSpec("synthesis", synthesis, [ws], [img]))
        render = (_CondStyleRender if cond else _StyleRender)(synthesis, D)
        render_inputs = [ws, lab] if cond else [ws]
    disc = _CondDiscriminator(D) if cond else _Discriminator(D)
    specs.append(GraphSpec("discriminator", disc, [img, lab] if cond else [img], [logit]))
    assert tuple(s.name for s in specs) == GRAPHS[cfg.kind]
    specs.append(GraphSpec(RENDER, render, render_inputs, [img, logit]))
    return specs


def _example_maker(spec: GraphSpec, G: nn.Module, cfg):
    """Realistic inputs: ws from the mapping network, images from the generator."""
    cond = cfg.num_classes > 0
    if spec.name == "synthesis" or (spec.name == RENDER and cfg.kind == "stylegan"):

        def make(batch, gen):
            z = torch.randn(batch, cfg.latent_dim, generator=gen)
            lab = torch.randint(0, max(cfg.num_classes, 1), (batch,), generator=gen)
            w = G.mapping(z, lab) if cond else G.mapping(z)
            ws = w[:, None].expand(-1, cfg.num_ws, -1).contiguous()
            return (ws, lab) if cond and spec.name == RENDER else (ws,)

        return make
    if spec.name == "discriminator":

        def make(batch, gen):
            z = torch.randn(batch, cfg.latent_dim, generator=gen)
            lab = torch.randint(0, max(cfg.num_classes, 1), (batch,), generator=gen)
            x = G(z, lab) if cond else G(z)
            return (x, lab) if cond else (x,)

        return make
    return None


@contextlib.contextmanager
def _quiet():
    """Silence torch.onnx's progress prints and TorchScript's deprecation warnings."""
    buf = io.StringIO()
    loggers = [
        logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export_onnx(spec: GraphSpec, example: tuple, path: Path) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dyn = {name: {0: batch} for name, _, _ in spec.inputs}
    with _quiet() as buf:
        try:
            torch.onnx.export(
                spec.module,
                example,
                str(path),
                input_names=[n for n, _, _ in spec.inputs],
                output_names=[n for n, _, _ in spec.outputs],
                dynamo=True,
                dynamic_shapes=dyn,
                external_data=False,
                verbose=False,
            )
        except Exception as e:
            raise ExportError(
                f"ONNX export of {spec.name!r} failed: {e.__class__.__name__}: "
                f"{str(e).splitlines()[0][:300] if str(e) else ''}"
            ) from None
    log.debug(buf.getvalue())
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as e:
        raise ExportError(f"exported {path.name} fails the ONNX checker: {str(e)[:300]}") from None


def export_torchscript(spec: GraphSpec, example: tuple, path: Path) -> None:
    with _quiet():
        traced = torch.jit.trace(spec.module, example, check_trace=False)
        torch.jit.save(traced, str(path))


def export_pt2(spec: GraphSpec, example: tuple, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dyn = {name: {0: batch} for name, _, _ in spec.inputs}
    with _quiet():
        ep = torch.export.export(spec.module, example, dynamic_shapes=dyn, strict=False)
        torch.export.save(ep, str(path))


def _runner(fmt: str, path: Path):
    if fmt == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]

        def run(*a):
            out = sess.run(None, {n: x.numpy() for n, x in zip(names, a)})
            return tuple(map(torch.from_numpy, out)) if len(out) > 1 else torch.from_numpy(out[0])

        return run
    if fmt == "torchscript":
        with _quiet():
            m = torch.jit.load(str(path), map_location="cpu").eval()
        return m
    with _quiet():
        return torch.export.load(str(path)).module()


def _outputs(x) -> tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _max_diff(what: str, names: list[str], got, ref, batch: int) -> float:
    """Largest |got - ref| over the outputs ``names``; a shape mismatch is an ExportError."""
    got, ref = _outputs(got), _outputs(ref)
    if len(got) != len(ref):
        raise ExportError(
            f"parity check failed: {what} returns {len(got)} outputs, expected {len(ref)}"
        )
    diff = 0.0
    for name, g, r in zip(names, got, ref):
        if tuple(g.shape) != tuple(r.shape):
            raise ExportError(
                f"parity check failed: {what} returns {name} of shape {tuple(g.shape)} at "
                f"batch {batch}, expected {tuple(r.shape)}"
            )
        diff = max(diff, float((g.float() - r.float()).abs().max()))
    return diff


def _within(what: str, against: str, diff: float, batch: int) -> None:
    if not diff <= PARITY_TOL:
        raise ExportError(
            f"parity check failed: {what} differs from {against} by {diff:.3g} at batch {batch} "
            f"(tolerance {PARITY_TOL}); no bundle written"
        )


@torch.no_grad()
def check_parity(spec: GraphSpec, fmt: str, path: Path, make, num_classes: int) -> dict[str, float]:
    run = _runner(fmt, path)
    gen = torch.Generator().manual_seed(1234)
    names = [n for n, _, _ in spec.outputs]
    out = {}
    for b in PARITY_BATCHES:
        x = spec.example(b, gen, num_classes, make)
        ref = spec.module(*x)
        with _quiet():
            got = run(*x)
        out[str(b)] = diff = _max_diff(f"{fmt} {spec.name}", names, got, ref, b)
        _within(f"{fmt} {spec.name}", "eager PyTorch", diff, b)
    return out


@torch.no_grad()
def check_fused(
    spec: GraphSpec, fmt: str, folder: Path, files: dict[str, str], make, num_classes: int
) -> dict[str, dict[str, float]]:
    """The exported ``render`` graph against the bundle's own separate graphs of the same format:
    its image equals the generator's (StyleGAN: the synthesis network's, clipped to [-1, 1]) and its
    logit equals the discriminator's on that image, for the same inputs."""
    render = _runner(fmt, folder / files[RENDER])
    gen_name = "synthesis" if "synthesis" in files else "generator"
    generator = _runner(fmt, folder / files[gen_name])
    disc = _runner(fmt, folder / files["discriminator"])
    rng = torch.Generator().manual_seed(4321)
    out: dict[str, dict[str, float]] = {"image": {}, "logit": {}}
    for b in PARITY_BATCHES:
        x = spec.example(b, rng, num_classes, make)
        label = x[1:]  # () or (label,)
        with _quiet():
            image, logit = _outputs(render(*x))
            ref_image = generator(*(x if gen_name == "generator" else x[:1]))
            if gen_name == "synthesis":
                ref_image = ref_image.clamp(-1.0, 1.0)  # the served image (see _StyleRender)
            ref_logit = disc(ref_image, *label)
        for key, got, ref in (("image", image, ref_image), ("logit", logit, ref_logit)):
            what = f"{fmt} {RENDER} ({key})"
            out[key][str(b)] = diff = _max_diff(what, [key], got, ref, b)
            _within(what, f"its {gen_name} + discriminator graphs", diff, b)
    return out


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def _io(entry: tuple[str, list[Any], str]) -> dict[str, Any]:
    return {"name": entry[0], "shape": entry[1], "dtype": entry[2]}


def _dataset_info(config: dict[str, Any]) -> dict[str, Any]:
    d = dict(config.get("dataset") or {})
    return {k: d.get(k) for k in ("dataset", "resolution", "channels", "class_names") if k in d}


def export_run(
    run: str | Path,
    out: str | Path,
    formats=DEFAULT_FORMATS,
    which: str = "auto",
    name: str | None = None,
    calibration_n: int = CALIBRATION_N,
    overwrite: bool = False,
    progress=None,
) -> Path:
    """Export a run directory (or checkpoint) to a bundle folder ``out``; returns its path."""
    formats = parse_formats(formats)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{str(out)!r} already exists; pass --overwrite to replace it")
    if calibration_n < 100:
        raise ExportError(f"calibration needs at least 100 samples, got {calibration_n}")
    say = progress or (lambda msg: None)
    # The eager work here (parity references, the minibatch-std measurement) is small; one
    # thread keeps it fast on a busy machine, where OpenMP barriers across cores stall.
    with torch_threads(1):
        return _export(run, out, formats, which, name, calibration_n, say)


def _export(run, out, formats, which, name, calibration_n, say) -> Path:
    from training.checkpoint import load_run

    loaded = load_run(run, which)
    cfg = loaded.model_cfg
    G, D = _bake(loaded.G_ema), _bake(loaded.D)
    mbstd = None
    if cfg.kind == "stylegan":
        mbstd = measure_mbstd(G, D, cfg)
        D.mbstd.freeze(mbstd)

    def build(tmp: Path) -> None:
        manifest = _write_bundle(tmp, loaded, cfg, G, D, formats, name or out.name, mbstd, say)
        say(f"calibrating the quality filters on {calibration_n} samples")
        manifest["filters"] = _calibrate(tmp, calibration_n)
        _write_manifest(tmp, manifest)

    return write_atomically(out, build)


def write_atomically(out: Path, build) -> Path:
    """``build(tmp)`` fills a temp folder beside ``out``, which is then renamed to ``out``
    (replacing an old one): a failure at any point leaves no bundle, half-written or mixed."""
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


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    p = folder / MANIFEST
    p.write_text(json.dumps(manifest, indent=2) + "\n")


def _write_bundle(tmp, loaded, cfg, G, D, formats, name, mbstd, say) -> dict[str, Any]:
    from training.models import style_ranges

    files: dict[str, dict[str, Any]] = {}
    graphs: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    fused: dict[str, Any] = {}
    timings: dict[str, float] = {}
    gen = torch.Generator().manual_seed(0)
    for spec in graph_specs(G, D, cfg):
        make = _example_maker(spec, G, cfg)
        with torch.no_grad():
            example = spec.example(2, gen, cfg.num_classes, make)
        graphs[spec.name] = {
            "inputs": [_io(i) for i in spec.inputs],
            "outputs": [_io(o) for o in spec.outputs],
            "files": {},
        }
        parity[spec.name] = {}
        for fmt in formats:
            fname = spec.name + SUFFIX[fmt]
            say(f"exporting {spec.name} ({fmt})")
            t0 = time.perf_counter()
            {"onnx": export_onnx, "torchscript": export_torchscript, "pt2": export_pt2}[fmt](
                spec, example, tmp / fname
            )
            timings[fname] = round(time.perf_counter() - t0, 2)
            parity[spec.name][fmt] = check_parity(spec, fmt, tmp / fname, make, cfg.num_classes)
            graphs[spec.name]["files"][fmt] = fname
        if spec.name == RENDER:  # the loader's graphs come first, so they are all there
            for fmt in formats:
                say(f"checking {RENDER} ({fmt}) against the separate graphs")
                by_graph = {g: graphs[g]["files"][fmt] for g in graphs}
                fused[fmt] = check_fused(spec, fmt, tmp, by_graph, make, cfg.num_classes)
    w_avg_file = None
    if cfg.kind == "stylegan":
        w_avg_file = "w_avg.npy"
        np.save(tmp / w_avg_file, G.mapping.w_avg.detach().cpu().numpy().astype(np.float32))
    for f in sorted(tmp.iterdir()):
        files[f.name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    worst = max(v for g in parity.values() for f in g.values() for v in f.values())
    ds = _dataset_info(loaded.config)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "kind": cfg.kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "image": {
            "channels": cfg.channels,
            "resolution": cfg.resolution,
            "range": [-1.0, 1.0],
            "layout": "NCHW",
            "dtype": "float32",
        },
        "latent_dim": cfg.latent_dim,
        # dcgan --latent-code: the generator reads a categorical code from z (argmax of its
        # first latent_code components); None when it has none.
        "latent_code": cfg.latent_code or None,
        "num_classes": cfg.num_classes,
        "class_names": list(cfg.class_names),
        "num_ws": cfg.num_ws if cfg.kind == "stylegan" else None,
        "w_dim": cfg.w_dim if cfg.kind == "stylegan" else None,
        "w_avg_file": w_avg_file,
        "style_ranges": style_ranges(cfg.num_ws) if cfg.kind == "stylegan" else None,
        "dataset": ds,
        "formats": list(formats),
        "graphs": graphs,
        "files": files,
        "parity": {
            "reference": "eager PyTorch (EMA generator, eval mode)",
            "tolerance": PARITY_TOL,
            "batches": list(PARITY_BATCHES),
            "max_abs_diff": worst,
            "per_graph": parity,
            "fused": {
                "graph": RENDER,
                "reference": "the bundle's separate graphs of the same format: image vs "
                + ("synthesis(ws)" if cfg.kind == "stylegan" else "generator(z[, label])")
                + ", logit vs discriminator(that image[, label])",
                "batches": list(PARITY_BATCHES),
                "max_abs_diff": max(
                    v for f in fused.values() for o in f.values() for v in o.values()
                ),
                "per_format": fused,
            },
        },
        "sampling": {
            "seed_rule": sampling.SEED_RULE,
            "truncation": sampling.TRUNCATION_RULE_W
            if cfg.kind == "stylegan"
            else sampling.TRUNCATION_RULE_Z,
            "label_rule": sampling.LABEL_RULE if cfg.num_classes > 0 else None,
            "noise": "constant buffers baked into the synthesis graph"
            if cfg.kind == "stylegan"
            else None,
        },
        "discriminator": {
            "minibatch_std": (
                {
                    "frozen_value": mbstd,
                    "note": "minibatch-stddev replaced by this constant (the mean statistic on "
                    f"{MBSTD_BATCHES} generated batches of 64) so a sample's logit does not "
                    "depend on the rest of its batch",
                }
                if mbstd is not None
                else None
            ),
        },
        "filters": None,
        "source": {
            "run_dir": str(Path(loaded.run_dir).resolve()),
            "checkpoint": str(Path(loaded.checkpoint).resolve()),
            "checkpoint_sha256": sha256_file(loaded.checkpoint),
            "step": loaded.step,
            "model": cfg.to_dict(),
            "train": loaded.config.get("train"),
        },
        "versions": tool_versions() | {"training": loaded.config.get("versions")},
        "export_seconds": timings,
    }
    _write_manifest(tmp, manifest)
    return manifest


def _calibrate(folder: Path, n: int) -> dict[str, Any]:
    """Score ``n`` generated samples with the exported discriminator, exactly as served."""
    from gancore import bundle as bundle_mod

    b = bundle_mod.load(folder, backend="onnx", device="cpu", require_gate=False)
    seeds = list(range(CALIBRATION_SEED0, CALIBRATION_SEED0 + n))
    logits = np.empty(n, np.float64)
    step = 500
    for i in range(0, n, step):
        chunk = seeds[i : i + step]
        lab = sampling.labels_for_seeds(chunk, b.num_classes)
        imgs = sampling.generate(b, chunk, lab, batch_size=step)
        logits[i : i + len(chunk)] = b.discriminator(imgs, lab)
    cal = filters.calibrate(logits)
    cal["seeds"] = f"{CALIBRATION_SEED0}-{CALIBRATION_SEED0 + n - 1}"
    cal["truncation"] = 1.0
    cal["graph"] = "discriminator.onnx (ONNX Runtime CPU)"
    return cal
