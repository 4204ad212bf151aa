"""A user's RGB photos at 64x64, end to end: a folder of mixed sizes and formats trains, exports,
passes a gate (rules loosened: a few steps of training), and serves 64x64 RGB PNGs."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from export.cli import main as export_main
from tests.serving.conftest import in_process
from training.cli import main as train_main
from training.eval.cli import main as eval_main
from training.eval.online import OnlineFD

pytestmark = pytest.mark.usefixtures("one_thread")


def _photos(root, n=30):
    """Two kinds of "photos": a warm disk on a light ground, a cool bar on a dark ground, at
    sizes that are neither square nor 64 (the folder rule crops and resizes them)."""
    rng = np.random.default_rng(0)
    sizes = [(80, 64), (64, 64), (100, 90)]
    for kind in ("disk", "bar"):
        (root / kind).mkdir(parents=True)
        for i in range(n):
            w, h = sizes[i % 3]
            yy, xx = np.mgrid[:h, :w]
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
            img = np.zeros((h, w, 3))
            if kind == "disk":
                img[:] = (0.9, 0.85, 0.7)
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 < (0.2 * h) ** 2
                img[inside] = (0.9, 0.3 + 0.3 * rng.random(), 0.1)
            else:
                img[:] = (0.1, 0.1, 0.2)
                img[np.abs(yy - cy) < 0.1 * h] = (0.2, 0.4 + 0.4 * rng.random(), 0.9)
            pic = Image.fromarray((img * 255).astype(np.uint8))
            pic.save(root / kind / f"{i:02d}.{'jpg' if i % 2 else 'png'}")


@pytest.mark.slow
def test_rgb_photo_folder_trains_exports_gates_and_serves(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("GANFORGE_HOME", str(tmp_path / "home"))
    photos, run, ref, bundle = (tmp_path / x for x in ("photos", "run", "ref.npz", "bundle"))
    _photos(photos)
    dataset = f"folder:{photos}"
    common = ["--dataset", dataset, "--resolution", "64"]
    rc = train_main([*common, "--out", str(run), "--g-width", "8", "--d-width", "8",
                     "--latent-dim", "16", "--batch-size", "16", "--kimg", "0.08",
                     "--eval-every", "0", "--no-progress"])  # fmt: skip
    assert rc == 0, capfd.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["channels"] == 3 and config["dataset"]["resolution"] == 64
    assert eval_main(["stats", *common, "--split", "heldout", "--out", str(ref)]) == 0
    # The online evaluation's real sample spans the classes of a folder sorted by class.
    online = OnlineFD(dataset, 64, n=16)
    # Its reference is the held-out split (as the gate's): 12 images here, fewer than n.
    assert set(online.real.labels.tolist()) == {0, 1} and len(online.real.features) == 12
    loose = ["--max-fd-ratio", "1e9", "--min-precision", "0", "--min-recall", "0"]
    rc = export_main([str(run), "--out", str(bundle), "--gate", "--ref", str(ref), *loose,
                      "-n", "64", "--no-filters"])  # fmt: skip
    assert rc == 0, capfd.readouterr().err
    gate = json.loads((bundle / "gate.json").read_text())
    assert gate["verdict"] == "passed" and gate["n"] == 64
    # Served as gated (no GAN_ALLOW_UNGATED): the gate's pass is what lets it in.
    with in_process({"GAN_BUNDLES": str(bundle), "GAN_API_KEY": ""}) as client:
        r = client.post("/generate", json={"model": "bundle", "n": 2, "seed": 5})
        assert r.status_code == 200, r.text
        for item in r.json()["images"]:
            pic = Image.open(io.BytesIO(base64.b64decode(item["data"])))
            assert pic.size == (64, 64) and pic.mode == "RGB"
