"""Load and run an exported bundle — the contract between export and serving.

A bundle is a folder: ``manifest.json`` (what it is, every file's sha256, the graphs' inputs and
outputs, parity, sampling rules, filter calibration, provenance), the graphs (``*.onnx``, ``*.ts``),
``w_avg.npy`` for StyleGAN-lite, and ``gate.json`` once the FID gate has run.

``load(path)`` checks every checksum before running anything and refuses a tampered file by name.
ONNX bundles run on ONNX Runtime and need neither torch nor ``training``; TorchScript bundles
import torch lazily. All methods take and return numpy arrays; images are float32 ``[N, C, R, R]``
in [-1, 1].
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gancore.errors import BundleError
from gancore.sampling import check_labels

FORMAT = "ganforge-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GATE = "gate.json"
BACKENDS = ("onnx", "torchscript")
BACKEND_SUFFIX = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2"}
DEVICES = ("auto", "cpu", "cuda")
GRAPHS = {
    "dcgan": ("generator", "discriminator"),
    "cgan": ("generator", "discriminator"),
    "stylegan": ("mapping", "synthesis", "discriminator"),
}
# Optional graphs: loaded when the manifest lists them, bundles without them still load.
# ``render`` is G (or synthesis) then D fused into one graph: the same inputs as the generator
# (or synthesis), outputs named "image" and "logit"; one runtime call instead of two.
OPTIONAL_GRAPHS = ("render",)
# ONNX Runtime CUDA options: the batcher makes batches of any size, and cuDNN's default
# EXHAUSTIVE algorithm search re-tunes for every new input shape (a latency spike per new size).
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file (manifests, gates and reference statistics all use it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def usable_cpus() -> int:
    """The CPUs this process may use (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(processes: int = 1) -> int:
    """ORT intra-op threads of one of ``processes`` processes sharing the machine (the serving
    workers): ``$GANFORGE_ORT_THREADS``, else the usable CPUs shared out, at most 8."""
    env = os.environ.get("GANFORGE_ORT_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise BundleError(f"GANFORGE_ORT_THREADS={env!r} is not an integer") from None
    return max(1, min(8, usable_cpus() // max(1, processes)))


def read_manifest(path: str | Path) -> dict[str, Any]:
    p = Path(path) / MANIFEST
    if not Path(path).is_dir():
        raise BundleError(f"bundle {str(path)!r} does not exist or is not a directory")
    if not p.is_file():
        raise BundleError(f"{str(path)!r} is not a bundle: {MANIFEST} is missing")
    try:
        m = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{str(p)!r} is not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f"{str(p)!r} is not a ganforge bundle manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"bundle format version {m.get('format_version')!r} is not supported "
            f"(this ganforge reads version {FORMAT_VERSION}); re-export the run"
        )
    if m.get("kind") not in GRAPHS:
        raise BundleError(f"bundle kind {m.get('kind')!r} unknown; expected one of {list(GRAPHS)}")
    return m


def verify_files(path: str | Path, manifest: dict[str, Any]) -> None:
    """Check every file listed in the manifest against its sha256; name the first bad one."""
    root = Path(path)
    for name, info in manifest.get("files", {}).items():
        f = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"bundle manifest lists an unsafe file path {name!r}")
        if not f.is_file():
            raise BundleError(f"bundle file {name!r} is missing from {str(root)!r}")
        got = sha256_file(f)
        if got != info.get("sha256"):
            raise BundleError(
                f"bundle file {name!r} failed its checksum (sha256 {got[:16]}…, manifest says "
                f"{str(info.get('sha256'))[:16]}…): it was modified or corrupted; re-export"
            )


def gate_failures(gate: dict) -> str:
    """The rules a failed gate.json names, with their figures ("precision 0.54 < 0.6; …")."""
    failed = [r for r in gate.get("rules") or [] if isinstance(r, dict) and not r.get("passed")]
    if failed:
        return "; ".join(str(r.get("text") or r.get("rule")) for r in failed)
    d, t = gate.get("distance"), gate.get("threshold")  # gate.json without per-rule entries
    return f"distance {d} > threshold {t}"


def read_gate(path: str | Path, manifest_sha256: str) -> tuple[dict | None, bool, str]:
    """(gate dict or None, deployable, reason)."""
    p = Path(path) / GATE
    if not p.is_file():
        return None, False, "no gate.json: run `gan-export gate BUNDLE --ref REF.npz --max-fd X`"
    try:
        gate = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, False, "gate.json is not valid JSON: run the gate again"
    if gate.get("manifest_sha256") != manifest_sha256:
        return gate, False, "gate.json was written for a different manifest: run the gate again"
    if gate.get("verdict") != "passed":
        return gate, False, f"the FID gate failed: {gate_failures(gate)}"
    return gate, True, "gate passed"


@dataclass(frozen=True)
class Verified:
    """A bundle checked without opening any session: see :func:`verify`."""

    manifest: dict[str, Any]
    manifest_sha256: str
    gate: dict | None
    deployable: bool
    reason: str


def verify(path: str | Path) -> Verified:
    """The one check every reader of a bundle makes before trusting it: the manifest, every file's
    sha256, and a gate verdict written for this very manifest. Raises BundleError on a missing or
    tampered file; an absent, stale or failed gate is ``deployable=False`` with the reason."""
    manifest = read_manifest(path)
    verify_files(path, manifest)
    sha = sha256_file(Path(path) / MANIFEST)
    gate, deployable, reason = read_gate(path, sha)
    return Verified(manifest, sha, gate, deployable, reason)


class _OrtGraph:
    def __init__(self, file: Path, providers: list, threads: int, spinning: bool):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # Several sessions share the cores (mapping -> synthesis, generator -> discriminator):
        # idle spinning threads of one would steal time from the next.
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(str(file), sess_options=so, providers=providers)
        except Exception as e:
            raise BundleError(f"ONNX Runtime cannot load {file.name!r}: {str(e)[:300]}") from None
        self.providers = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return self.session.run(None, dict(zip(self.input_names, arrays)))[0]

    def outputs(self, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name."""
        got = self.session.run(None, dict(zip(self.input_names, arrays)))
        return dict(zip(self.output_names, got))


class _TorchScriptGraph:
    def __init__(self, file: Path, device: str):
        import torch

        self.torch, self.device = torch, device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                self.module = torch.jit.load(str(file), map_location=device).eval()
            except Exception as e:
                raise BundleError(f"torch cannot load {file.name!r}: {str(e)[:300]}") from None
        self.providers = [f"torchscript:{device}"]

    def _run(self, arrays):
        torch = self.torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
            return self.module(*args)

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return self._run(arrays).float().cpu().numpy()

    def outputs(self, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        image, logit = self._run(arrays)  # a traced render module returns (image, logit)
        return {"image": image.float().cpu().numpy(), "logit": logit.float().cpu().numpy()}


def _ort_providers(device: str, device_id: int = 0, available: list[str] | None = None) -> list:
    """ONNX Runtime providers for ``device`` (CUDA on GPU ``device_id``, with CUDA_OPTIONS)."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not cuda:
        raise BundleError(
            "device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); install the 'gpu' extra or use device='cpu'"
        )
    if device in ("auto", "cuda") and cuda:
        from gancore import cuda as cuda_libs

        cuda_libs.preload()  # the pip-installed CUDA/cuDNN libraries, before any CUDA session
        options = {"device_id": int(device_id), **CUDA_OPTIONS}
        return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class Bundle:
    """A verified bundle with runtime sessions. See the module docstring."""

    def __init__(
        self,
        path: str | Path,
        backend: str = "onnx",
        device: str = "auto",
        require_gate: bool = True,
        threads: int | None = None,
        spinning: bool = False,
        device_id: int = 0,
    ):
        if backend not in BACKENDS:
            raise BundleError(
                f"backend {backend!r} not supported; use one of {', '.join(BACKENDS)}"
            )
        if device not in DEVICES:
            raise BundleError(f"device {device!r} not supported; use one of {', '.join(DEVICES)}")
        self.path = Path(path)
        v = verify(self.path)
        self.manifest = m = v.manifest
        self.manifest_sha256 = v.manifest_sha256
        self.gate, self.deployable, self.gate_reason = v.gate, v.deployable, v.reason
        if require_gate and not self.deployable:
            raise BundleError(f"bundle {str(self.path)!r} is not deployable: {self.gate_reason}")

        self.name: str = m["name"]
        self.kind: str = m["kind"]
        img = m["image"]
        self.channels: int = int(img["channels"])
        self.resolution: int = int(img["resolution"])
        self.latent_dim: int = int(m["latent_dim"])
        self.latent_code: int = int(m.get("latent_code") or 0)  # values of z's code (0: none)
        self.class_names: list[str] = list(m.get("class_names") or [])
        self.num_classes: int = int(m.get("num_classes") or 0)
        self.num_ws: int | None = m.get("num_ws")
        self.w_dim: int | None = m.get("w_dim")
        self.style_ranges: dict[str, list[int]] = dict(m.get("style_ranges") or {})
        self.w_avg: np.ndarray | None = None
        if m.get("w_avg_file"):
            self.w_avg = np.load(self.path / m["w_avg_file"], allow_pickle=False).astype(np.float32)
        self.filters: dict[str, Any] | None = m.get("filters")
        self.backend = backend

        self._graphs: dict[str, Any] = {}
        if backend == "onnx":
            providers = _ort_providers(device, device_id)
            n_threads = threads or default_threads()
        else:
            tdev = "cpu"
            if device != "cpu":
                import torch

                if torch.cuda.is_available():
                    tdev = f"cuda:{int(device_id)}"
                elif device == "cuda":
                    raise BundleError("device 'cuda' requested but torch sees no CUDA device")
        for g in GRAPHS[self.kind]:
            info = m["graphs"].get(g)
            if g == "discriminator" and "discriminator" in m["graphs"] and info is None:
                continue  # imported without one (gan-export import): no scores, no filters
            file = (info or {}).get("files", {}).get(backend)
            if not file:
                raise BundleError(
                    f"bundle {self.name!r} has no {backend} file for graph {g!r} "
                    f"(formats exported: {m.get('formats')})"
                )
            if file not in m.get("files", {}):
                raise BundleError(f"graph file {file!r} is not checksummed in the manifest")
            if backend == "onnx":
                self._graphs[g] = _OrtGraph(self.path / file, providers, n_threads, spinning)
            else:
                self._graphs[g] = _TorchScriptGraph(self.path / file, tdev)
        for g in OPTIONAL_GRAPHS:
            file = ((m["graphs"].get(g) or {}).get("files") or {}).get(backend)
            if not file:
                continue
            if file not in m.get("files", {}):
                raise BundleError(f"graph file {file!r} is not checksummed in the manifest")
            if backend == "onnx":
                graph = _OrtGraph(self.path / file, providers, n_threads, spinning)
                if not {"image", "logit"} <= set(graph.output_names):
                    raise BundleError(
                        f"graph {g!r} of {self.name!r} must output 'image' and 'logit', "
                        f"it outputs {graph.output_names}"
                    )
                self._graphs[g] = graph
            else:
                self._graphs[g] = _TorchScriptGraph(self.path / file, tdev)
        # False for a generator imported without its discriminator: no scores, no filters
        self.scored: bool = "discriminator" in self._graphs
        self.providers: list[str] = next(iter(self._graphs.values())).providers
        self.provider: str = self.providers[0]
        if device == "cuda" and backend == "onnx" and self.provider != "CUDAExecutionProvider":
            raise BundleError(
                f"device 'cuda' requested but ONNX Runtime fell back to {self.provider} "
                "(CUDA libraries missing?); install onnxruntime-gpu[cuda,cudnn] or use device='cpu'"
            )

    def __repr__(self) -> str:
        return (
            f"Bundle({self.name!r}, kind={self.kind}, {self.resolution}x{self.resolution}x"
            f"{self.channels}, backend={self.backend}, provider={self.provider}, "
            f"deployable={self.deployable})"
        )

    # -- inputs -------------------------------------------------------------------------------
    def _z(self, z: Any) -> np.ndarray:
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim or z.shape[0] < 1:
            raise BundleError(f"z must have shape [N>=1, {self.latent_dim}], got {list(z.shape)}")
        return z

    def _labels(self, labels: Any, n: int) -> list[np.ndarray]:
        lab = check_labels(labels, self.num_classes, n)
        return [] if lab is None else [np.ascontiguousarray(lab, dtype=np.int64)]

    def _need(self, graph: str) -> Any:
        if graph not in self._graphs:
            raise BundleError(f"a {self.kind} bundle has no {graph!r} graph")
        return self._graphs[graph]

    # -- graphs -------------------------------------------------------------------------------
    def generator(self, z: Any, labels: Any = None) -> np.ndarray:
        """DCGAN/cGAN: ``z [N, latent_dim]`` (+ int64 labels ``[N]``) -> images."""
        g = self._need("generator")
        z = self._z(z)
        return g(z, *self._labels(labels, z.shape[0]))

    def mapping(self, z: Any, labels: Any = None) -> np.ndarray:
        """StyleGAN-lite: ``z [N, latent_dim]`` (+ labels) -> ``w [N, w_dim]`` (no truncation)."""
        g = self._need("mapping")
        z = self._z(z)
        return g(z, *self._labels(labels, z.shape[0]))

    def synthesis(self, ws: Any) -> np.ndarray:
        """StyleGAN-lite: ``ws [N, num_ws, w_dim]`` -> images."""
        g = self._need("synthesis")
        ws = np.ascontiguousarray(ws, dtype=np.float32)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim) or ws.shape[0] < 1:
            raise BundleError(
                f"ws must have shape [N>=1, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"
            )
        return g(ws)

    def discriminator(self, images: Any, labels: Any = None) -> np.ndarray:
        """Images (+ labels) -> logits ``[N]`` (per-sample: StyleGAN's minibatch-std is frozen)."""
        if "discriminator" not in self._graphs:
            raise BundleError(
                f"bundle {self.name!r} has no discriminator, so its images cannot be scored or "
                "filtered (top_k, drs): import it again with --discriminator"
            )
        g = self._graphs["discriminator"]
        x = np.ascontiguousarray(images, dtype=np.float32)
        want = (self.channels, self.resolution, self.resolution)
        if x.ndim != 4 or x.shape[1:] != want or x.shape[0] < 1:
            raise BundleError(
                f"images must have shape [N>=1, {', '.join(map(str, want))}], got {list(x.shape)}"
            )
        return g(x, *self._labels(labels, x.shape[0])).reshape(-1)

    @property
    def fused(self) -> bool:
        """True when the bundle carries the optional fused ``render`` graph (G then D)."""
        return "render" in self._graphs

    def render(self, x: Any, labels: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Images and discriminator logits in one go: ``z`` (+ labels) for DCGAN/cGAN, ``ws`` for
        StyleGAN-lite -> (images ``[N, C, R, R]`` in [-1, 1], logits ``[N]``). One call of the
        fused ``render`` graph when the bundle has one, else the generator then the discriminator.
        StyleGAN-lite images are clipped to [-1, 1] (:func:`gancore.sampling.synthesize`'s rule)
        before they are scored."""
        if self.kind == "stylegan":
            ws = np.ascontiguousarray(x, dtype=np.float32)
            if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim) or ws.shape[0] < 1:
                raise BundleError(
                    f"ws must have shape [N>=1, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"
                )
            if not self.fused:
                images = np.clip(self.synthesis(ws), -1.0, 1.0)
                return images, self.discriminator(images, None)
            out = self._graphs["render"].outputs(ws)
        else:
            z = self._z(x)
            lab = self._labels(labels, z.shape[0])
            if not self.fused:
                images = self.generator(z, labels)
                if not self.scored:  # imported without a discriminator: no score to give
                    return images, np.full(len(images), np.nan, np.float32)
                return images, self.discriminator(images, labels)
            out = self._graphs["render"].outputs(z, *lab)
        images = np.asarray(out["image"], np.float32)
        if self.kind == "stylegan":
            images = np.clip(images, -1.0, 1.0)
        return images, np.asarray(out["logit"], np.float32).reshape(-1)


def load(
    path: str | Path,
    backend: str = "onnx",
    device: str = "auto",
    require_gate: bool = True,
    threads: int | None = None,
    spinning: bool = False,
    device_id: int = 0,
) -> Bundle:
    """Verify and open a bundle. ``require_gate``: refuse one without a passing, current gate.json."""
    return Bundle(path, backend, device, require_gate, threads, spinning, device_id)
