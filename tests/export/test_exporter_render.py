"""The fused ``render`` graph (G -> D in one graph) that every bundle carries.

A server on a GPU runs it to get an image and its score without copying the image to the host
and back between two sessions; these tests hold it to the same contract as the separate graphs:
same input names, dtypes and dynamic batch, outputs named ``image`` and ``logit``, checksummed
files, and the same numbers as ``generator``/``synthesis`` followed by ``discriminator``.
"""

import json
import warnings

import numpy as np
import pytest
import torch

from export import exporter
from gancore import bundle as bundle_mod
from gancore import sampling
from gancore.errors import ExportError

KINDS = ("dcgan", "cgan", "stylegan")
BATCHES = (1, 5)
TOL = 1e-5


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _inputs(b, kind: str, seeds: list[int]) -> dict[str, np.ndarray]:
    """The render graph's inputs for ``seeds``, built by the shared sampling rules."""
    labels = sampling.labels_for_seeds(seeds, b.num_classes)
    z = sampling.z_from_seeds(seeds, b.latent_dim)
    if kind == "stylegan":
        w = b.mapping(z, labels)
        out = {"ws": np.ascontiguousarray(np.repeat(w[:, None, :], b.num_ws, axis=1))}
    else:
        out = {"z": z}
    if b.num_classes:
        out["label"] = labels.astype(np.int64)
    return out


def _separate(b, kind: str, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What the loader's graphs give for the same inputs: the image, then its logit."""
    label = feed.get("label")
    if kind == "stylegan":  # the served StyleGAN-lite image is clipped to [-1, 1], then scored
        image = np.clip(b.synthesis(feed["ws"]), -1.0, 1.0)
    else:
        image = b.generator(feed["z"], label)
    return image, b.discriminator(image, label)


def _ort(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_lists_render_like_the_other_graphs(tiny_bundles, kind):
    path = tiny_bundles[kind]
    m = _manifest(path)
    render = m["graphs"]["render"]
    first = m["graphs"]["synthesis" if kind == "stylegan" else "generator"]
    want_inputs = list(first["inputs"])
    if kind == "stylegan" and m["num_classes"]:
        want_inputs.append({"name": "label", "shape": ["batch"], "dtype": "int64"})
    assert render["inputs"] == want_inputs
    assert render["outputs"] == [
        m["graphs"]["discriminator"]["inputs"][0],  # {"name": "image", [batch, C, R, R], float32}
        m["graphs"]["discriminator"]["outputs"][0],  # {"name": "logit", [batch], float32}
    ]
    assert [o["name"] for o in render["outputs"]] == ["image", "logit"]
    assert render["files"] == {"onnx": "render.onnx", "torchscript": "render.ts"}
    for f in render["files"].values():
        assert m["files"][f]["sha256"] == bundle_mod.sha256_file(path / f)
    # Parity: against eager PyTorch like every graph, and against the separate graphs.
    assert set(m["parity"]["per_graph"]["render"]) == {"onnx", "torchscript"}
    for diffs in m["parity"]["per_graph"]["render"].values():
        assert set(diffs) == {"1", "7", "64"} and max(diffs.values()) <= exporter.PARITY_TOL
    fused = m["parity"]["fused"]
    assert fused["graph"] == "render" and set(fused["per_format"]) == {"onnx", "torchscript"}
    assert 0 <= fused["max_abs_diff"] <= exporter.PARITY_TOL
    for per_out in fused["per_format"].values():
        assert set(per_out) == {"image", "logit"}
        assert all(set(d) == {"1", "7", "64"} for d in per_out.values())


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_render_equals_generator_then_discriminator(tiny_bundles, kind):
    path = tiny_bundles[kind]
    b = bundle_mod.load(path, require_gate=False)
    sess = _ort(path / "render.onnx")
    assert [o.name for o in sess.get_outputs()] == ["image", "logit"]
    m = _manifest(path)
    assert [(i.name, i.type) for i in sess.get_inputs()] == [
        (i["name"], f"tensor({'int64' if i['dtype'] == 'int64' else 'float'})")
        for i in m["graphs"]["render"]["inputs"]
    ]
    # The batch dimension is symbolic, not fixed to the export example's size.
    assert all(isinstance(i.shape[0], str) for i in sess.get_inputs())
    assert all(isinstance(o.shape[0], str) for o in sess.get_outputs())
    seeds = [7, 0, 123, 42, 9]
    alone = {}
    for n in BATCHES:
        feed = _inputs(b, kind, seeds[:n])
        image, logit = sess.run(None, feed)
        assert image.dtype == np.float32 and logit.dtype == np.float32
        assert image.shape == (n, b.channels, b.resolution, b.resolution) and logit.shape == (n,)
        ref_image, ref_logit = _separate(b, kind, feed)
        assert np.abs(image - ref_image).max() <= TOL
        assert np.abs(logit - ref_logit).max() <= TOL
        alone[n] = (image, logit)
    # A sample's image and logit do not depend on the rest of its batch (StyleGAN's minibatch
    # std is frozen in the fused graph too).
    for i, s in enumerate(seeds):
        one_image, one_logit = sess.run(None, _inputs(b, kind, [s]))
        assert np.abs(alone[5][0][i] - one_image[0]).max() <= TOL
        assert abs(float(alone[5][1][i]) - float(one_logit[0])) <= TOL


@pytest.mark.parametrize("kind", KINDS)
def test_torchscript_render_equals_the_onnx_one(tiny_bundles, kind):
    path = tiny_bundles[kind]
    b = bundle_mod.load(path, require_gate=False)
    sess = _ort(path / "render.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        ts = torch.jit.load(str(path / "render.ts"), map_location="cpu").eval()
    for n in BATCHES:
        feed = _inputs(b, kind, list(range(100, 100 + n)))
        with torch.inference_mode():
            image, logit = ts(*(torch.from_numpy(v) for v in feed.values()))
        ref_image, ref_logit = sess.run(None, feed)
        assert tuple(image.shape) == ref_image.shape and tuple(logit.shape) == (n,)
        assert np.abs(image.numpy() - ref_image).max() <= 1e-4
        assert np.abs(logit.numpy() - ref_logit).max() <= 1e-4


def test_render_is_eager_g_then_d(tiny_bundles, tiny_runs):
    """The fused graph computes the trained models: eager G_ema then eager D, same seed."""
    from training.checkpoint import load_run

    b = bundle_mod.load(tiny_bundles["cgan"], require_gate=False)
    run = load_run(tiny_runs["cgan"])
    feed = _inputs(b, "cgan", [3, 4, 5, 6, 7])
    image, logit = _ort(tiny_bundles["cgan"] / "render.onnx").run(None, feed)
    z, lab = torch.from_numpy(feed["z"]), torch.from_numpy(feed["label"])
    with torch.no_grad():
        G, D = run.G_ema.eval(), run.D.eval()
        ref_image = G(z, lab)
        ref_logit = D(ref_image, lab)
    assert np.abs(image - ref_image.numpy()).max() <= 1e-4
    assert np.abs(logit - ref_logit.numpy()).max() <= 1e-4


def test_the_loader_still_opens_bundles_with_render(tiny_bundles):
    """``render`` is an extra graph: the loader's graph list is unchanged and loading works."""
    assert "render" not in {g for graphs in bundle_mod.GRAPHS.values() for g in graphs}
    for kind in KINDS:
        for backend in ("onnx", "torchscript"):
            b = bundle_mod.load(tiny_bundles[kind], backend=backend, require_gate=False)
            assert "render" in b.manifest["graphs"]


def test_a_fused_graph_that_disagrees_is_refused(tiny_runs, tmp_path, monkeypatch):
    """The fused check is not vacuous: a render graph that is not G -> D leaves no bundle."""

    def wrong(self, z):
        image = self.g(z)
        return image, self.d(image) + 1e-2  # eager and exported agree; the separate graphs do not

    monkeypatch.setattr(exporter._Render, "forward", wrong)
    with pytest.raises(
        ExportError, match=r"parity check failed: onnx render \(logit\) differs from its generator"
    ):
        exporter.export_run(tiny_runs["dcgan"], tmp_path / "b", formats="onnx", calibration_n=100)
    assert list(tmp_path.iterdir()) == []


def test_conditional_stylegan_render_takes_ws_and_label(tmp_path):
    """The model family allows a class-conditional StyleGAN-lite (gan-train does not train one
    yet): its render graph takes ``ws`` and ``label`` and gives eager synthesis then D."""
    from training.config import ModelConfig
    from training.models import build_models

    cfg = ModelConfig(
        kind="stylegan", resolution=16, latent_dim=8, num_classes=3, g_width=4, d_width=4, w_dim=8
    )
    torch.manual_seed(0)
    G, D = (exporter._bake(m) for m in build_models(cfg))
    D.mbstd.freeze(0.5)
    render = {s.name: s for s in exporter.graph_specs(G, D, cfg)}["render"]
    assert [i[0] for i in render.inputs] == ["ws", "label"]
    assert [o[0] for o in render.outputs] == ["image", "logit"]
    make = exporter._example_maker(render, G, cfg)
    with torch.no_grad():
        example = render.example(2, torch.Generator().manual_seed(0), cfg.num_classes, make)
    exporter.export_onnx(render, example, tmp_path / "render.onnx")
    sess = _ort(tmp_path / "render.onnx")
    assert [i.name for i in sess.get_inputs()] == ["ws", "label"]
    for n in BATCHES:
        with torch.no_grad():
            ws, label = make(n, torch.Generator().manual_seed(n))
            ref_image = G.synthesis(ws).clamp(-1.0, 1.0)
            ref_logit = D(ref_image, label)
        image, logit = sess.run(None, {"ws": ws.numpy(), "label": label.numpy()})
        assert np.abs(image - ref_image.numpy()).max() <= 1e-4
        assert np.abs(logit - ref_logit.numpy()).max() <= 1e-4
