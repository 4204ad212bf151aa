"""`gan-export import`: generators trained elsewhere become bundles that load, serve and gate like
ganforge's own; every bad input is refused by name, before anything is written."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from export.cli import main as export_main
from export.import_bundle import import_generator
from export.importer import Signature
from gancore import sampling
from gancore.bundle import load, sha256_file
from gancore.errors import BundleError, ExportError
from tests.conftest import one_torch_thread

NZ, NGF, NDF, NC = 8, 4, 4, 3  # the tutorial's architecture at tiny widths (64x64 is fixed)


# The pytorch/examples DCGAN as its main.py defines it, written here from its description (the
# bundle must match *this*, not the importer's own rebuild of it).
class TutorialG(nn.Module):
    def __init__(self, nz=NZ, ngf=NGF, nc=NC):
        super().__init__()
        self.ngpu = 1
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x):  # x: [N, nz, 1, 1]
        return self.main(x)


class TutorialD(nn.Module):
    def __init__(self, ndf=NDF, nc=NC):
        super().__init__()
        self.ngpu = 1
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


def _randomize_bn(net: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, as after training (the defaults would hide a BN mix-up)."""
    g = torch.Generator().manual_seed(7)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """netG / netD state dicts saved as main.py saves them, and the eager nets."""
    root = tmp_path_factory.mktemp("tutorial")
    torch.manual_seed(0)
    G, D = _randomize_bn(TutorialG()), _randomize_bn(TutorialD())
    torch.save(G.state_dict(), root / "netG_epoch_24.pth")
    torch.save(D.state_dict(), root / "netD_epoch_24.pth")
    return {"G": G, "D": D, "netG": root / "netG_epoch_24.pth", "netD": root / "netD_epoch_24.pth"}


@pytest.fixture(scope="module")
def tutorial_bundle(tutorial, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tutorial"
    argv = ["import", str(tutorial["netG"]), "--discriminator", str(tutorial["netD"])]
    with one_torch_thread():
        assert export_main([*argv, "--out", str(out), "--calibration-n", "100", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def tutorial_g_only(tutorial, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tutorial-g"
    with one_torch_thread():
        import_generator(tutorial["netG"], out, formats="onnx")
    return out


def _cli(capfd, *argv) -> tuple[int, str, str]:
    rc = export_main(["import", *map(str, argv)])
    cap = capfd.readouterr()
    return rc, cap.out, cap.err


def _refused(capfd, tmp_path, *argv, out_name="out") -> str:
    """Run an import that must fail: exit 2, one `error:` line, nothing written; the message."""
    out = tmp_path / out_name
    rc, stdout, err = _cli(capfd, *argv, "--out", out, "--calibration-n", "100")
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    return lines[0]


# -- pytorch/examples DCGAN -----------------------------------------------------------------------
def test_tutorial_bundle_equals_the_tutorial_model(tutorial, tutorial_bundle):
    z = sampling.z_from_seeds(range(7), NZ)
    want = tutorial["G"](torch.from_numpy(z)[:, :, None, None]).detach().numpy()
    for backend in ("onnx", "torchscript"):
        b = load(tutorial_bundle, backend=backend, require_gate=False)
        assert (b.kind, b.resolution, b.channels, b.latent_dim) == ("dcgan", 64, NC, NZ)
        got = b.generator(z)
        assert np.abs(got - want).max() <= 1e-4, backend
        # The bundle's D returns the logit the tutorial's Sigmoid squashes.
        prob = tutorial["D"](torch.from_numpy(got)).detach().numpy()
        logit = b.discriminator(got)
        assert logit.shape == (7,)
        assert np.abs(1 / (1 + np.exp(-logit.astype(np.float64))) - prob).max() <= 1e-5
        assert b.fused  # the optional fused render graph
        images, scores = b.render(z)
        assert np.abs(images - got).max() <= 1e-4 and np.abs(scores - logit).max() <= 1e-4


def test_tutorial_manifest_has_the_seed_rule_checksums_parity_and_filters(
    tutorial_bundle, tutorial
):
    m = json.loads((tutorial_bundle / "manifest.json").read_text())
    assert m["sampling"]["seed_rule"] == sampling.SEED_RULE
    assert m["source"]["format"].startswith("pytorch/examples")
    assert m["source"]["sizes"] == {"nz": NZ, "ngf": NGF, "nc": NC, "ndf": NDF}
    assert m["source"]["generator_sha256"] == sha256_file(tutorial["netG"])
    assert m["parity"]["max_abs_diff"] <= 1e-4 and m["parity"]["batches"] == [1, 7, 64]
    assert m["parity"]["fused"]["max_abs_diff"] <= 1e-4
    assert set(m["graphs"]) == {"generator", "discriminator", "render"}
    for name, info in m["files"].items():
        assert sha256_file(tutorial_bundle / name) == info["sha256"]
    assert m["filters"]["n"] == 100 and "drs" in m["filters"]


def test_seeds_give_the_same_image_from_import_on(tutorial_bundle, tutorial):
    b = load(tutorial_bundle, require_gate=False)
    z = sampling.z_from_seed(123, NZ)  # PCG64(seed) -> z, as for every ganforge bundle
    want = tutorial["G"](torch.from_numpy(z)[None, :, None, None]).detach().numpy()
    assert np.abs(sampling.generate(b, [123]) - want).max() <= 1e-4


def test_generator_only_bundle_loads_and_says_why_it_cannot_filter(tutorial_g_only):
    b = load(tutorial_g_only, require_gate=False)
    m = b.manifest
    assert m["graphs"]["discriminator"] is None and m["filters"] is None and not b.fused
    with pytest.raises(BundleError, match="no discriminator.*--discriminator"):
        b.discriminator(np.zeros((1, NC, 64, 64), np.float32))
    images, scores = b.render(sampling.z_from_seeds([1, 2], NZ))
    assert images.shape == (2, NC, 64, 64) and np.isnan(scores).all() and not b.scored


def test_generator_only_bundle_is_served(tutorial_g_only):
    from gancore.images import to_uint8
    from tests.serving.conftest import in_process, serving_env
    from tests.serving.test_http import png_pixels

    with in_process(serving_env([tutorial_g_only], GAN_API_KEY="")) as client:
        r = client.post("/generate", json={"model": "tutorial-g", "seeds": [5, 9]})
        assert r.status_code == 200, r.text
        want = to_uint8(sampling.generate(load(tutorial_g_only, require_gate=False), [5, 9]))
        for img, pix in zip(r.json()["images"], want):
            np.testing.assert_array_equal(png_pixels(img["data"]), pix)
        assert [img["score"] for img in r.json()["images"]] == [None, None]  # none to give
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert models["tutorial-g"]["filters"] == ["none"]  # no discriminator, no filters
        for method in ("top_k", "drs"):
            body = {"model": "tutorial-g", "n": 2, "filter": {"method": method}}
            r = client.post("/generate", json=body)
            assert r.status_code == 422, r.text
            assert "no discriminator" in r.text and "filter.method" in r.text
        assert client.post("/generate", json={"model": "tutorial-g", "n": 1}).status_code == 200


def test_tutorial_bundle_is_served_with_its_filters(tutorial_bundle):
    from tests.serving.conftest import in_process, serving_env

    with in_process(serving_env([tutorial_bundle], GAN_API_KEY="")) as client:
        body = {"model": "tutorial", "n": 2, "filter": {"method": "drs", "oversample": 8}}
        r = client.post("/generate", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["filter"]["method"] == "drs" and r.json()["count"] == 2


def _save_sd(path: Path, sd: dict) -> Path:
    torch.save(sd, path)
    return path


def test_another_architecture_is_refused_by_its_first_misfit(tutorial, tmp_path, capfd):
    sd = TutorialG().state_dict()
    sd["main.3.weight"] = torch.zeros(NGF * 8, NGF * 2, 4, 4)  # a width that does not fit
    err = _refused(capfd, tmp_path, _save_sd(tmp_path / "a.pth", sd))
    assert "'main.3.weight' has shape [32, 8, 4, 4]" in err and "expects [32, 16, 4, 4]" in err

    sd = dict(TutorialG().state_dict(), **{"main.13.weight": torch.zeros(3)})
    err = _refused(capfd, tmp_path, _save_sd(tmp_path / "b.pth", sd))
    assert "key 'main.13.weight' is not in the pytorch/examples DCGAN" in err

    sd = TutorialG().state_dict()
    del sd["main.4.running_var"]
    err = _refused(capfd, tmp_path, _save_sd(tmp_path / "c.pth", sd))
    assert "key 'main.4.running_var' is missing" in err

    err = _refused(capfd, tmp_path, _save_sd(tmp_path / "d.pth", nn.Linear(4, 4).state_dict()))
    assert "no key 'main.0.weight'" in err and "'weight'" in err

    # the discriminator given as the generator, and a generator given as the discriminator
    err = _refused(capfd, tmp_path, tutorial["netD"])
    assert "generator netD_epoch_24.pth" in err
    err = _refused(capfd, tmp_path, tutorial["netG"], "--discriminator", tutorial["netG"])
    assert "discriminator netG_epoch_24.pth" in err


def test_dataparallel_keys_load(tutorial, tmp_path):
    from export import tutorial_dcgan

    sd = {"module." + k: v for k, v in tutorial["G"].state_dict().items()}
    G = tutorial_dcgan.load_generator(_save_sd(tmp_path / "dp.pth", sd))
    z = torch.randn(2, NZ)
    assert torch.equal(G(z), tutorial["G"](z[:, :, None, None]))


def test_a_state_dict_takes_no_signature(tutorial, tmp_path, capfd):
    err = _refused(capfd, tmp_path, tutorial["netG"], "--kind", "dcgan", "--latent-dim", NZ)
    assert "carries its own sizes" in err


def test_files_that_are_not_what_their_extension_says_are_refused(tutorial, tmp_path, capfd):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    assert "is not a PyTorch state dict" in _refused(capfd, tmp_path, junk)
    as_onnx = tmp_path / "netG.onnx"
    as_onnx.write_bytes(tutorial["netG"].read_bytes())
    err = _refused(capfd, tmp_path, as_onnx, "--kind", "dcgan", "--latent-dim", NZ)
    assert "is a PyTorch archive, not an ONNX model" in err
    bad_onnx = tmp_path / "g.onnx"
    bad_onnx.write_bytes(b"\x08\x07garbage")
    err = _refused(capfd, tmp_path, bad_onnx, "--kind", "dcgan", "--latent-dim", NZ)
    assert "is not a valid ONNX model" in err
    as_ts = tmp_path / "netG.ts"
    as_ts.write_bytes(tutorial["netG"].read_bytes())
    err = _refused(capfd, tmp_path, as_ts, "--kind", "dcgan", "--latent-dim", NZ)
    assert "is not a TorchScript module" in err
    scripted = tmp_path / "scripted.pth"
    torch.jit.save(torch.jit.script(nn.Tanh()), str(scripted))
    assert "is a TorchScript module, not a state dict" in _refused(capfd, tmp_path, scripted)
    other = tmp_path / "g.h5"
    other.write_bytes(b"x")
    assert "unknown extension '.h5'" in _refused(capfd, tmp_path, other)
    assert "does not exist" in _refused(capfd, tmp_path, tmp_path / "nope.pth")


def test_nothing_is_written_when_writing_fails(tutorial, tmp_path, monkeypatch):
    from export import import_bundle

    def boom(*a, **k):
        raise ExportError("calibration exploded")

    monkeypatch.setattr(import_bundle, "_calibrate", boom)
    with pytest.raises(ExportError, match="exploded"), one_torch_thread():
        import_generator(tutorial["netG"], tmp_path / "b", tutorial["netD"], formats="onnx",
                         calibration_n=100)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_an_existing_bundle_is_kept_without_overwrite(tutorial, tutorial_g_only, tmp_path, capfd):
    before = (tutorial_g_only / "manifest.json").read_text()
    out = tmp_path / "x"
    out.mkdir()
    rc, _, err = _cli(capfd, tutorial["netG"], "--out", out)
    assert rc == 2 and "already exists; pass --overwrite" in err
    assert (tutorial_g_only / "manifest.json").read_text() == before


# -- ONNX and TorchScript generators ----------------------------------------------------------------
class TinyG(nn.Module):
    """z [N, 6, 1, 1] (+ label) -> NHWC image in [0, 1], 8x8x3: everything the adapters undo."""

    def __init__(self, classes: int = 0):
        super().__init__()
        self.embed = nn.Embedding(classes, 6) if classes else None
        self.net = nn.Sequential(nn.ConvTranspose2d(6, 8, 4, 1, 0), nn.ReLU(),
                                 nn.ConvTranspose2d(8, 3, 4, 2, 1))  # fmt: skip

    def forward(self, z, label=None):
        if self.embed is not None:
            z = z + self.embed(label)[:, :, None, None]
        return torch.sigmoid(self.net(z)).permute(0, 2, 3, 1)


class TinyD(nn.Module):
    """NHWC [0, 1] image -> probability [N, 1] (a final Sigmoid, as the tutorial's)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                                 nn.Linear(64, 1))  # fmt: skip

    def forward(self, x):
        return torch.sigmoid(self.net(x.permute(0, 3, 1, 2)))


def _onnx(module, args, path, names, dynamic=True) -> Path:
    torch.onnx.export(
        module.eval(), args, str(path), input_names=names[:-1], output_names=names[-1:],
        dynamo=False, dynamic_axes={n: {0: "batch"} for n in names} if dynamic else None,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(1)
    G, D = TinyG(), TinyD()
    z = torch.randn(2, 6, 1, 1)
    with torch.no_grad():
        files = {
            "G": G,
            "D": D,
            "g": _onnx(G, (z,), root / "g.onnx", ["latent", "img"]),
            "d": _onnx(D, (G(z),), root / "d.onnx", ["x", "p"]),
            "g_fixed": _onnx(G, (z[:1],), root / "g_fixed.onnx", ["latent", "img"], dynamic=False),
        }
    return files


NHWC01 = ["--kind", "dcgan", "--latent-dim", "6", "--range", "0,1", "--layout", "nhwc"]


def test_onnx_generator_is_wrapped_exactly(tiny, tmp_path, capfd):
    out = tmp_path / "mine"
    rc, stdout, err = _cli(capfd, tiny["g"], *NHWC01, "--discriminator", tiny["d"], "--out", out,
                           "--calibration-n", "100")  # fmt: skip
    assert rc == 0, err
    assert "wrote dcgan bundle" in stdout and "8x8x3" in stdout
    b = load(out, require_gate=False)
    z = sampling.z_from_seeds(range(5), 6)
    with torch.no_grad():
        y = tiny["G"](torch.from_numpy(z)[:, :, None, None]).numpy()
        want = y.transpose(0, 3, 1, 2) * 2 - 1
        p = tiny["D"](torch.from_numpy(y)).numpy().reshape(-1)
    assert np.abs(b.generator(z) - want).max() <= 1e-5
    logit = b.discriminator(b.generator(z))
    assert np.abs(1 / (1 + np.exp(-logit)) - p).max() <= 1e-5  # the final Sigmoid dropped
    assert b.fused and b.manifest["formats"] == ["onnx"]
    assert b.manifest["source"]["discriminator"]["dropped_final_sigmoid"] is True
    assert b.manifest["filters"]["n"] == 100


def test_conditional_onnx_generator_with_int32_labels(tmp_path, capfd):
    torch.manual_seed(2)
    G = TinyG(classes=3)

    class Int32Labels(nn.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, z, label):
            return self.g(z, label.long())

    z, lab = torch.randn(2, 6, 1, 1), torch.tensor([0, 2], dtype=torch.int32)
    path = _onnx(Int32Labels(G), (z, lab), tmp_path / "c.onnx", ["z", "y", "img"])
    out = tmp_path / "c"
    rc, _, err = _cli(capfd, path, *NHWC01[2:], "--kind", "cgan", "--classes", "a,b,c",
                      "--out", out)  # fmt: skip
    assert rc == 0, err
    b = load(out, require_gate=False)
    assert b.class_names == ["a", "b", "c"] and b.kind == "cgan"
    zs = sampling.z_from_seeds(range(4), 6)
    labels = np.array([0, 1, 2, 1])
    with torch.no_grad():
        want = G(torch.from_numpy(zs)[:, :, None, None], torch.from_numpy(labels)).numpy()
    assert np.abs(b.generator(zs, labels) - (want.transpose(0, 3, 1, 2) * 2 - 1)).max() <= 1e-5


def test_torchscript_generator(tiny, tmp_path, capfd):
    path = tmp_path / "g.ts"
    torch.jit.save(torch.jit.trace(tiny["G"].eval(), torch.randn(2, 6, 1, 1)), str(path))
    out = tmp_path / "ts"
    rc, _, err = _cli(capfd, path, *NHWC01, "--out", out)
    assert rc == 0, err
    z = sampling.z_from_seeds(range(3), 6)
    with torch.no_grad():
        want = tiny["G"](torch.from_numpy(z)[:, :, None, None]).numpy().transpose(0, 3, 1, 2)
    for backend in ("onnx", "torchscript"):
        b = load(out, backend=backend, require_gate=False)
        assert np.abs(b.generator(z) - (want * 2 - 1)).max() <= 1e-5
    assert b.manifest["source"]["z_shape"] == "[N, latent, 1, 1]"


class LogitD(nn.Module):
    """TinyD without its Sigmoid: NHWC [0, 1] image -> logit [N, 1]."""

    def __init__(self, d: TinyD):
        super().__init__()
        self.net = d.net

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


def test_torchscript_discriminator_and_a_fixed_batch(tiny, tmp_path, capfd):
    g, d = tmp_path / "g.ts", tmp_path / "d.ts"
    torch.jit.save(torch.jit.trace(tiny["G"].eval(), torch.randn(2, 6, 1, 1)), str(g))
    D = LogitD(tiny["D"]).eval()
    torch.jit.save(torch.jit.trace(D, torch.rand(2, 8, 8, 3)), str(d))
    out = tmp_path / "tsd"
    rc, _, err = _cli(capfd, g, *NHWC01, "--discriminator", d, "--out", out,
                      "--calibration-n", "100")  # fmt: skip
    assert rc == 0, err
    b = load(out, require_gate=False)
    z = sampling.z_from_seeds(range(3), 6)
    with torch.no_grad():
        want = D(tiny["G"](torch.from_numpy(z)[:, :, None, None])).numpy().reshape(-1)
    assert np.abs(b.discriminator(b.generator(z)) - want).max() <= 1e-5 and b.fused

    class Batch1(nn.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, z):
            return self.g(z.reshape(1, 6, 1, 1))  # a batch of 1 baked in

    fixed = tmp_path / "fixed.ts"
    torch.jit.save(torch.jit.trace(Batch1(tiny["G"]).eval(), torch.randn(1, 6)), str(fixed))
    err = _refused(capfd, tmp_path, fixed, *NHWC01)
    assert "fails at batch 16" in err and "fixed batch of 1" in err


def test_onnx_mismatches_are_named(tiny, tmp_path, capfd):
    def refused(path, *flags):
        return _refused(capfd, tmp_path, path, *flags)

    err = refused(tiny["g_fixed"], *NHWC01)
    assert "input 'latent' has a fixed batch of 1" in err and "dynamic_shapes" in err
    err = refused(tiny["g"], *NHWC01[:2], "--latent-dim", "7", *NHWC01[4:])
    assert "input 'latent'" in err and "latent size 6, --latent-dim says 7" in err
    err = refused(tiny["g"], *NHWC01[:4], "--range", "0,0.5", "--layout", "nhwc")
    assert "outside the declared range [0, 0.5]" in err and "--range" in err
    err = refused(tiny["g"], "--kind", "dcgan", "--latent-dim", "6", "--range", "0,1")
    assert "channels" in err and "--layout" in err  # NHWC read as NCHW: 8 "channels"
    err = refused(tiny["g"], *NHWC01[:4], "--kind", "cgan", "--num-classes", "3")
    assert "has 1 inputs" in err and "label [batch] int64" in err
    err = refused(tiny["g"], "--latent-dim", "6")
    assert "needs at least --kind and --latent-dim" in err
    err = refused(tiny["g"], *NHWC01, "--discriminator", tiny["g"])
    assert "discriminator g.onnx" in err


def test_onnx_files_that_are_not_generators_or_give_nan_are_refused(tmp_path, capfd):
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    path = _onnx(classifier, (torch.randn(2, 3, 8, 8),), tmp_path / "cls.onnx", ["x", "logits"])
    err = _refused(capfd, tmp_path, path, "--kind", "dcgan", "--latent-dim", "6")
    assert "input 'x' has shape [batch, 3, 8, 8]" in err and "is it a generator?" in err

    class NaNs(nn.Module):
        def forward(self, z):
            return torch.log(z[:, :3] - 100.0)[:, :, None, None].expand(-1, 3, 4, 4)

    path = _onnx(NaNs(), (torch.randn(2, 6),), tmp_path / "nan.onnx", ["z", "img"])
    err = _refused(capfd, tmp_path, path, "--kind", "dcgan", "--latent-dim", "6")
    assert "NaN or infinite" in err

    class F64(nn.Module):
        def forward(self, z):
            return torch.tanh(z[:, :3, None, None].expand(-1, 3, 4, 4)).float()

    path = _onnx(
        F64(), (torch.randn(2, 6, dtype=torch.float64),), tmp_path / "f64.onnx", ["z", "i"]
    )
    err = _refused(capfd, tmp_path, path, "--kind", "dcgan", "--latent-dim", "6")
    assert "input 'z' is float64, expected float32" in err


# -- the gate -------------------------------------------------------------------------------------
def test_an_imported_onnx_generator_gates_and_keeps_ganforges_seeds(
    tiny_bundles, digits_ref, digits_classifier, tmp_path, capfd
):
    """ganforge's own exported generator.onnx, imported as a foreign file: the same images for
    the same seeds, and the gate runs on it like on any bundle."""
    src = load(tiny_bundles["dcgan"], require_gate=False)
    out = tmp_path / "reimported"
    gate = ["--gate", "--ref", digits_ref, "-n", "200", "--max-fd", "1e9", "--min-precision", "0",
            "--min-recall", "0", "--classifier", digits_classifier, "--kid-subsets", "5"]  # fmt: skip
    with one_torch_thread():
        rc, stdout, err = _cli(capfd, Path(tiny_bundles["dcgan"]) / "generator.onnx", "--kind",
                               "dcgan", "--latent-dim", src.latent_dim, "--out", out, *gate)  # fmt: skip
    assert rc == 0, err
    assert "gate passed" in stdout
    b = load(out)  # deployable: a passing gate.json
    np.testing.assert_array_equal(sampling.generate(b, [3, 4]), sampling.generate(src, [3, 4]))
    assert json.loads((out / "gate.json").read_text())["verdict"] == "passed"


def test_the_gates_inputs_are_checked_before_anything_is_written(
    tutorial, digits_ref, digits_classifier, tmp_path, capfd
):
    assert "needs reference statistics" in _refused(capfd, tmp_path, tutorial["netG"], "--gate")
    err = _refused(capfd, tmp_path, tutorial["netG"], "--gate", "--ref", digits_ref, "--max-fd",
                   "1e9", "--classifier", digits_classifier)  # fmt: skip
    assert "is for resolution 16, not 64" in err  # the tutorial is 64x64


def test_signature_checks():
    with pytest.raises(ExportError, match="needs its classes"):
        Signature("cgan", 4).check()
    with pytest.raises(ExportError, match="LO < HI"):
        Signature("dcgan", 4, value_range=(1.0, 0.0)).check()


def test_python_m_export_cli_import_runs_the_import(tmp_path):
    """`python -m export.cli import …` (not only the gan-export script): a clear refusal."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "export.cli", "import", str(tmp_path / "netG.pth"), "--out",
         str(tmp_path / "b")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error:") and "netG.pth" in proc.stderr
    assert not (tmp_path / "b").exists()
