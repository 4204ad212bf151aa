"""Exported bundles: graphs, parity, manifest, checksums, and one image per seed everywhere."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from gancore import bundle as bundle_mod
from gancore import sampling
from gancore.errors import BundleError, ExportError

KINDS = ("dcgan", "cgan", "stylegan")


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_describes_the_bundle(tiny_bundles, tiny_runs, kind):
    m = json.loads((tiny_bundles[kind] / "manifest.json").read_text())
    assert m["format"] == "ganforge-bundle" and m["format_version"] == 1
    assert m["kind"] == kind and m["image"] == {
        "channels": 1,
        "resolution": 16,
        "range": [-1.0, 1.0],
        "layout": "NCHW",
        "dtype": "float32",
    }
    assert m["latent_dim"] == 16 and m["dataset"]["dataset"] == "digits"
    assert m["source"]["step"] == 4 and m["source"]["run_dir"] == str(tiny_runs[kind].resolve())
    assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])
    assert "PCG64(seed)" in m["sampling"]["seed_rule"] and m["sampling"]["truncation"]
    # Every graph in both formats, checksummed, with its IO described.
    for info in m["graphs"].values():
        assert set(info["files"]) == {"onnx", "torchscript"}
        for f in info["files"].values():
            assert len(m["files"][f]["sha256"]) == 64
        assert info["inputs"][0]["shape"][0] == "batch"
    # Parity measured at 1, 7, 64 and within tolerance.
    p = m["parity"]
    assert p["batches"] == [1, 7, 64] and 0 <= p["max_abs_diff"] <= 1e-4
    for per_fmt in p["per_graph"].values():
        for diffs in per_fmt.values():
            assert set(diffs) == {"1", "7", "64"}
    assert m["filters"]["n"] >= 10_000 and m["filters"]["drs"]["gamma"] is not None
    if kind == "cgan":
        assert m["graphs"]["generator"]["inputs"][1] == {
            "name": "label",
            "shape": ["batch"],
            "dtype": "int64",
        }
        assert m["class_names"] == [str(i) for i in range(10)]
    if kind == "stylegan":
        assert m["num_ws"] == 6 and m["w_dim"] == 16
        assert set(m["style_ranges"]) == {"coarse", "middle", "fine"}
        assert m["files"][m["w_avg_file"]]
        assert m["discriminator"]["minibatch_std"]["frozen_value"] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_image_everywhere(tiny_bundles, tiny_runs, kind):
    """ONNX, TorchScript and eager agree for a seed, alone or inside a batch."""
    from training.checkpoint import load_run

    ort_b = bundle_mod.load(tiny_bundles[kind], require_gate=False)
    ts_b = bundle_mod.load(tiny_bundles[kind], backend="torchscript", require_gate=False)
    assert ort_b.provider == "CPUExecutionProvider" and ts_b.provider == "torchscript:cpu"
    seeds = [3, 0, 17, 42, 5, 99, 1000]
    batch = sampling.generate(ort_b, seeds, truncation=0.7)
    alone = sampling.generate(ort_b, [42], truncation=0.7)[0]
    assert np.abs(batch[3] - alone).max() <= 1e-5
    ts = sampling.generate(ts_b, seeds, truncation=0.7)
    assert np.abs(batch - ts).max() <= 1e-4

    run = load_run(tiny_runs[kind])
    G, cfg = run.G_ema, run.model_cfg
    z = torch.from_numpy(sampling.z_from_seeds([42], cfg.latent_dim))
    lab = torch.tensor([42 % 10]) if kind == "cgan" else None
    with torch.no_grad():
        if kind == "stylegan":
            w = G.mapping(z)
            w = G.mapping.w_avg + 0.7 * (w - G.mapping.w_avg)
            eager = G.synthesis(w[:, None].expand(-1, cfg.num_ws, -1))
            z = torch.from_numpy(sampling.z_from_seeds([42], cfg.latent_dim))
        else:
            z = torch.from_numpy(sampling.z_from_seeds([42], cfg.latent_dim, 0.7))
            eager = G(z, lab) if lab is not None else G(z)
    assert np.abs(eager.clamp(-1, 1).numpy()[0] - alone).max() <= 1e-4
    assert batch.shape == (7, 1, 16, 16) and np.abs(batch).max() <= 1.0

    labels = sampling.labels_for_seeds(seeds, ort_b.num_classes)
    logits = ort_b.discriminator(batch, labels)
    one = ort_b.discriminator(batch[3:4], None if labels is None else labels[3:4])
    assert logits.shape == (7,) and abs(float(logits[3] - one[0])) <= 1e-5


def test_stylegan_style_mix_and_interpolation(tiny_bundles):
    b = bundle_mod.load(tiny_bundles["stylegan"], require_gate=False)
    grid = sampling.style_mix(b, [1, 2, 3], [4, 5], "coarse", truncation=0.8)
    assert grid.shape == (12, 1, 16, 16)
    # Cell (row 1, col 1) differs from its row seed only through the coarse layers.
    assert not np.allclose(grid[4], grid[3])
    path = sampling.interpolate(b, 1, 2, 5, space="w")
    assert path.shape == (5, 1, 16, 16)
    ends = sampling.generate(b, [1, 2])
    assert np.abs(path[0] - ends[0]).max() <= 1e-5 and np.abs(path[-1] - ends[1]).max() <= 1e-5
    zpath = sampling.interpolate(b, 1, 2, 3, space="z")
    assert np.abs(zpath[0] - ends[0]).max() <= 1e-5


def test_labels_are_validated_before_running(tiny_bundles):
    b = bundle_mod.load(tiny_bundles["cgan"], require_gate=False)
    z = sampling.z_from_seeds([0, 1], b.latent_dim)
    with pytest.raises(ExportError, match="out of range"):
        b.generator(z, np.array([0, -1]))
    with pytest.raises(ExportError, match="conditional"):
        b.generator(z)
    img = b.generator(z, np.array([3, 9]))
    assert b.discriminator(img, [3, 9]).shape == (2,)
    d = bundle_mod.load(tiny_bundles["dcgan"], require_gate=False)
    with pytest.raises(ExportError, match="unconditional"):
        d.generator(z[:, : d.latent_dim], [1, 2])
    with pytest.raises(BundleError, match="shape"):
        d.generator(np.zeros((2, 3), np.float32))


def test_tampered_file_is_refused_by_name(tiny_bundles, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundles["dcgan"], dst)
    f = dst / "generator.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"'generator\.onnx' failed its checksum"):
        bundle_mod.load(dst, require_gate=False)
    (dst / "generator.onnx").unlink()
    with pytest.raises(BundleError, match=r"'generator\.onnx' is missing"):
        bundle_mod.load(dst, require_gate=False)


def test_gate_is_required_by_default(tiny_bundles):
    with pytest.raises(BundleError, match="not deployable: no gate.json"):
        bundle_mod.load(tiny_bundles["dcgan"])


def test_cuda_request_without_cuda_says_so(tiny_bundles):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BundleError, match="'cuda' requested"):
        bundle_mod.load(tiny_bundles["dcgan"], device="cuda", require_gate=False)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_that_falls_back_to_cpu_is_refused(tiny_bundles, monkeypatch):
    """ORT runs a CUDA session on CPU when the CUDA libraries are missing; the loader checks what
    each session really got (here: a CPU-only ORT told it has CUDA, so the session falls back)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with pytest.raises(BundleError, match="fell back to CPUExecutionProvider"):
        bundle_mod.load(tiny_bundles["dcgan"], device="cuda", require_gate=False)


def test_cuda_provider_options_do_not_retune_per_shape():
    got = bundle_mod._ort_providers("cuda", 2, available=["CUDAExecutionProvider", "CPU"])
    (name, options), cpu = got
    assert name == "CUDAExecutionProvider" and cpu == "CPUExecutionProvider"
    assert options == {"device_id": 2, "cudnn_conv_algo_search": "HEURISTIC"}
    assert bundle_mod._ort_providers("auto", available=["CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]


def _with_fused_render(src, dst, outputs=("image", "logit")):
    """A copy of a DCGAN bundle with a ``render`` graph: generator and discriminator merged into
    one ONNX graph (what the exporter writes for new bundles), outputs renamed ``outputs``."""
    import onnx
    from onnx import compose, helper

    shutil.copytree(src, dst)
    (dst / "gate.json").unlink(missing_ok=True)
    m = json.loads((dst / "manifest.json").read_text())
    g = onnx.load(dst / m["graphs"]["generator"]["files"]["onnx"])
    d = compose.add_prefix(onnx.load(dst / m["graphs"]["discriminator"]["files"]["onnx"]), "d_")
    image = g.graph.output[0].name
    merged = compose.merge_models(g, d, io_map=[(image, d.graph.input[0].name)])
    logit = d.graph.output[0].name
    merged.graph.node.extend(
        helper.make_node("Identity", [old], [new])
        for old, new in zip((image, logit), outputs)
        if old != new
    )
    old = {o.name: o for o in list(g.graph.output) + list(d.graph.output)}
    del merged.graph.output[:]
    for new, name in zip(outputs, (image, logit)):
        out = onnx.ValueInfoProto()
        out.CopyFrom(old[name])
        out.name = new
        merged.graph.output.append(out)
    onnx.save(merged, dst / "render.onnx")
    m["graphs"]["render"] = {"files": {"onnx": "render.onnx"}}
    m["files"]["render.onnx"] = {"sha256": bundle_mod.sha256_file(dst / "render.onnx")}
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _without_render(src, dst):
    """A copy of a bundle without its fused ``render`` graph (as bundles exported before it)."""
    shutil.copytree(src, dst)
    (dst / "gate.json").unlink(missing_ok=True)
    m = json.loads((dst / "manifest.json").read_text())
    for f in m["graphs"].pop("render", {}).get("files", {}).values():
        m["files"].pop(f, None)
        (dst / f).unlink()
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_optional_fused_render_graph_gives_the_same_images_and_scores(tiny_bundles, tmp_path):
    src = _without_render(tiny_bundles["dcgan"], tmp_path / "plain")
    plain = bundle_mod.load(src, require_gate=False)
    assert not plain.fused  # bundles without the graph still load
    fused = bundle_mod.load(_with_fused_render(src, tmp_path / "fused"), require_gate=False)
    assert fused.fused
    z = sampling.z_from_seeds(range(5), fused.latent_dim)
    images, logits = fused.render(z)
    want_images, want_logits = plain.render(z)
    np.testing.assert_allclose(images, want_images, atol=1e-6)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-6)
    assert logits.shape == (5,)
    bad = _with_fused_render(tiny_bundles["dcgan"], tmp_path / "bad", outputs=("img", "score"))
    with pytest.raises(BundleError, match="must output 'image' and 'logit'"):
        bundle_mod.load(bad, require_gate=False)


def test_runtime_modules_do_not_import_torch(tiny_bundles):
    code = (
        "import sys\n"
        "import gancore.bundle, gancore.sampling, gancore.filters, gancore.images\n"
        f"b = gancore.bundle.load({str(tiny_bundles['stylegan'])!r}, require_gate=False)\n"
        "gancore.sampling.generate(b, [0, 1], truncation=0.5)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_torchscript_backend_shows_no_deprecation_warnings(tiny_bundles):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = bundle_mod.load(tiny_bundles["dcgan"], backend="torchscript", require_gate=False)
        sampling.generate(b, [0])
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
