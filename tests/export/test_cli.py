"""gan-export / gan-sample as a user meets them: happy paths, and bad input answered with
`error: ...`, exit status 2, no traceback and nothing half-written."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export import exporter
from export.cli import main as export_main
from export.sample_cli import main as sample_main
from gancore.errors import ExportError
from tests.conftest import TINY_RES, one_torch_thread

REPO = Path(__file__).resolve().parents[2]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_export_cli_writes_all_formats_quietly(tiny_runs, tmp_path, capfd):
    out = tmp_path / "dcgan-bundle"
    rc = export_main(
        [str(tiny_runs["dcgan"]), "--out", str(out), "--formats", "onnx,torchscript,pt2"]
    )
    cap = capfd.readouterr()
    assert rc == 0, cap.err
    assert "wrote dcgan bundle" in cap.out and "✅" not in cap.out + cap.err
    assert "Warning" not in cap.err
    m = json.loads((out / "manifest.json").read_text())
    assert m["graphs"]["generator"]["files"] == {
        "onnx": "generator.onnx",
        "torchscript": "generator.ts",
        "pt2": "generator.pt2",
    }
    assert m["parity"]["per_graph"]["generator"]["pt2"]["64"] <= 1e-4
    # Existing bundle: refused without --overwrite, untouched.
    rc = export_main([str(tiny_runs["dcgan"]), "--out", str(out)])
    assert rc == 2 and "already exists" in capfd.readouterr().err
    assert _leftovers(tmp_path) == []


def test_failed_parity_leaves_no_bundle(tiny_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(exporter, "PARITY_TOL", -1.0)
    with pytest.raises(ExportError, match="parity check failed"):
        exporter.export_run(tiny_runs["dcgan"], tmp_path / "b", formats="onnx")
    assert list(tmp_path.iterdir()) == []


def _expect_error(main, argv, capsys, match: str):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and match in err and "Traceback" not in err


def test_export_bad_inputs(tiny_runs, tmp_path, capsys, digits_extractor):
    run = tmp_path / "run-no-ckpt"
    run.mkdir()
    shutil.copy(tiny_runs["dcgan"] / "config.json", run / "config.json")
    out = tmp_path / "out"
    _expect_error(export_main, [run, "--out", out], capsys, "no checkpoint")
    corrupt = tmp_path / "run-corrupt"
    shutil.copytree(tiny_runs["dcgan"], corrupt)
    for ck in (corrupt / "checkpoints").glob("ckpt-*.pt"):
        ck.write_bytes(ck.read_bytes()[:1000])
    _expect_error(export_main, [corrupt, "--out", out], capsys, "corrupt")
    _expect_error(export_main, [tmp_path / "nope", "--out", out], capsys, "neither")
    good = tiny_runs["dcgan"]
    _expect_error(export_main, [good, "--out", out, "--formats", "onnx,tflite"], capsys, "tflite")
    _expect_error(export_main, [good, "--out", out, "--gate", "--max-fd", "5"], capsys, "--ref")
    _expect_error(export_main, [good, "--out", out, "--max-fd", "5"], capsys, "--gate")
    _expect_error(export_main, ["gate", out, "--max-fd", "5"], capsys, "--ref")
    # A reference made for another resolution is refused before any export work.
    from training.eval.score import reference_stats

    ref32 = tmp_path / "digits-32.npz"
    with one_torch_thread():
        reference_stats(digits_extractor, "digits", 32, "heldout", n=64).save(ref32)
    _expect_error(
        export_main,
        [good, "--out", out, "--gate", "--ref", ref32, "--max-fd", "5"],
        capsys,
        f"resolution 32, not {TINY_RES}",
    )
    _expect_error(
        export_main,
        [good, "--out", out, "--gate", "--ref", tmp_path / "x.npz", "--max-fd-ratio", "-1"],
        capsys,
        "--max-fd-ratio must be a positive number, got -1",
    )
    assert not out.exists() and _leftovers(tmp_path) == []


def test_sample_cli_grid_outdir_and_style_mix(tiny_bundles, tmp_path, capsys):
    from PIL import Image

    grid = tmp_path / "grid.png"
    rc = sample_main(
        [str(tiny_bundles["cgan"]), "--seeds", "0-15,42", "--truncation", "0.7", "--class", "3",
         "--grid", str(grid), "--outdir", str(tmp_path / "d")]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert Image.open(grid).size == (5 * 18 + 2, 4 * 18 + 2)
    assert len(list((tmp_path / "d").glob("seed*.png"))) == 17
    mix = tmp_path / "mix.png"
    rc = sample_main(
        [str(tiny_bundles["stylegan"]), "--style-mix", "--rows", "1,2,3", "--cols", "4,5",
         "--styles", "0-3", "--grid", str(mix)]
    )  # fmt: skip
    assert rc == 0 and Image.open(mix).size == (3 * 18 + 2, 4 * 18 + 2)


def test_sample_cli_bad_inputs(tiny_bundles, tmp_path, capsys):
    g = tmp_path / "g.png"
    sg, cg, dc = (str(tiny_bundles[k]) for k in ("stylegan", "cgan", "dcgan"))
    _expect_error(sample_main, [dc, "--seeds", "5-3", "--grid", g], capsys, "below the start")
    _expect_error(sample_main, [dc, "--seeds", "abc", "--grid", g], capsys, "'abc'")
    _expect_error(
        sample_main, [cg, "--seeds", "1", "--class", "10", "--grid", g], capsys, "out of range"
    )
    _expect_error(
        sample_main, [dc, "--seeds", "1", "--class", "1", "--grid", g], capsys, "unconditional"
    )
    _expect_error(
        sample_main,
        [sg, "--style-mix", "--rows", "1", "--cols", "2", "--styles", "0-6", "--grid", g],
        capsys,
        "outside 0..5",
    )
    _expect_error(
        sample_main,
        [dc, "--style-mix", "--rows", "1", "--cols", "2", "--grid", g],
        capsys,
        "StyleGAN",
    )
    _expect_error(
        sample_main, [dc, "--seeds", "1", "--truncation", "1.5", "--grid", g], capsys, "truncation"
    )
    _expect_error(
        sample_main, [tmp_path / "nope", "--seeds", "1", "--grid", g], capsys, "does not exist"
    )
    _expect_error(sample_main, [dc, "--seeds", "1"], capsys, "--grid")
    assert not g.exists()


def test_gan_sample_console_script_does_not_import_torch(tiny_bundles, tmp_path):
    code = (
        "import sys\n"
        "from export.sample_cli import main\n"
        f"rc = main([{str(tiny_bundles['stylegan'])!r}, '--seeds', '0-3', '--truncation', '0.5',"
        f" '--grid', {str(tmp_path / 'g.png')!r}])\n"
        "assert rc == 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training'))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "g.png").is_file()


def _write_mnist(root: Path, n_train: int = 40, n_test: int = 20) -> None:
    """A tiny MNIST in torchvision's raw format (idx files), so the test needs no download."""
    import numpy as np

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        imgs = np.zeros((n, 28, 28), np.uint8)
        for i, y in enumerate(labels):  # a bright bar whose place is the class, plus noise
            imgs[i, 2 + 2 * y : 6 + 2 * y, 4:24] = 220
            imgs[i] += rng.integers(0, 30, (28, 28), dtype=np.uint8)
        head = np.array([0x803, n, 28, 28], ">i4").tobytes()
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(head + imgs.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            np.array([0x801, n], ">i4").tobytes() + labels.tobytes()
        )


def test_gate_reads_the_floor_dataset_from_data_root(tiny_runs, tmp_path, monkeypatch, capfd):
    """A user's MNIST outside the default root: gan-eval stats, gan-export --gate and
    gan-export gate all find it with --data-root; without it the floor cannot be measured."""
    from training.eval.cli import main as eval_main

    data = tmp_path / "my-data"
    _write_mnist(data)
    home = tmp_path / "home"  # default data root ~/.cache/ganforge/data: empty here
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GANFORGE_HOME", str(home / "ganforge"))
    ref = tmp_path / "mnist.npz"
    run = tmp_path / "run-mnist"  # the tiny digits run, relabelled as trained on MNIST
    shutil.copytree(tiny_runs["dcgan"], run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["dataset"]["dataset"] = "mnist"
    (run / "config.json").write_text(json.dumps(cfg))
    with one_torch_thread():
        rc = eval_main(["stats", "--dataset", "mnist", "--data-root", str(data), "--resolution",
                        str(TINY_RES), "--split", "heldout", "--out", str(ref)])  # fmt: skip
        assert rc == 0, capfd.readouterr().err
        bundle = tmp_path / "b"
        gate = ["--ref", str(ref), "-n", "16", "--no-filters", "--max-fd-ratio", "1000",
                "--min-precision", "0.01", "--min-recall", "0.01"]  # fmt: skip
        rc = export_main([str(run), "--out", str(bundle), "--formats", "onnx", "--calibration-n",
                          "100", "--gate", "--data-root", str(data), *gate])  # fmt: skip
        cap = capfd.readouterr()
        assert rc in (0, 1), cap.err
        assert "gate: measuring the real-vs-real floor" in cap.err  # progress is logged
        floor = json.loads((bundle / "gate.json").read_text())["real_floor"]
        assert floor["n"] == 16 and floor["split"] == "train" and floor["fd"] > 0
        # The same bundle, gated again with -q: the same floor; no progress on stderr.
        rc = export_main(["gate", str(bundle), "-q", "--data-root", str(data), *gate])
        cap = capfd.readouterr()
        assert rc in (0, 1) and "gate: " not in cap.err and "gate " in cap.out
        assert json.loads((bundle / "gate.json").read_text())["real_floor"] == floor
        # Default root: no MNIST there, and (deterministically) no network to fetch it.
        import urllib.error
        import urllib.request

        def offline(*a, **k):
            raise urllib.error.URLError("offline (test)")

        monkeypatch.setattr(urllib.request, "urlopen", offline)
        rc = export_main(["gate", str(bundle), *gate])
    err = capfd.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: dataset 'mnist' is not under ")
    assert str(home / ".cache" / "ganforge" / "data") in err and "--data-root DIR" in err
    _expect_error(export_main, [run, "--out", tmp_path / "c", "--data-root", data], capfd,
                  "--data-root is a gate option")  # fmt: skip


def test_gate_against_imported_inception_stats(tiny_bundles, tmp_path, monkeypatch, capfd):
    """Published (mu, sigma) statistics: the gate refuses the precision/recall rules it cannot
    measure, and gates on FID alone when they are set to 0. The FID Inception here has random
    weights made by the test (the real file cannot be fetched), its sha256 patched in."""
    import numpy as np
    import torch

    from gancore.bundle import sha256_file
    from training.datasets import load_dataset
    from training.eval import inception
    from training.eval.cli import main as eval_main
    from training.eval.score import dataset_images, subset_indices

    weights = tmp_path / "torch" / "hub" / "checkpoints" / inception.WEIGHTS_NAME
    weights.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(inception.build_fid_inception().state_dict(), weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(inception, "WEIGHTS_SHA256", sha256_file(weights))
    # The gate generates in chunks of 500; 299x299 Inception on 500 images is minutes on a CPU.
    from export.gate import pool as gate_pool

    monkeypatch.setattr(gate_pool, "CHUNK", 8)
    with one_torch_thread():
        ext = inception.InceptionExtractor()
        ds = load_dataset("digits", TINY_RES, "heldout")
        x = np.concatenate([b for b, _ in dataset_images(ds, subset_indices(len(ds), 16))])
        f = ext.features(x).astype(np.float64)
    published = tmp_path / "fid_stats_digits.npz"
    np.savez(published, mu=f.mean(0), sigma=np.cov(f, rowvar=False))
    ref = tmp_path / "digits-inception.npz"
    rc = eval_main(["import-stats", str(published), "--extractor", "inception", "--out", str(ref),
                    "--dataset", "digits", "--resolution", str(TINY_RES), "--split", "heldout"])  # fmt: skip
    cap = capfd.readouterr()
    assert rc == 0, cap.err
    assert json.loads(cap.out)["source"]["file"] == str(published.resolve())
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundles["dcgan"], bundle)
    gate = ["gate", str(bundle), "--ref", str(ref), "-n", "8", "--no-filters", "-q"]
    _expect_error(export_main, gate, capfd, "pass --min-precision 0 --min-recall 0")
    with one_torch_thread():
        rc = export_main([*gate, "--min-precision", "0", "--min-recall", "0",
                          "--max-fd-ratio", "1000"])  # fmt: skip
    cap = capfd.readouterr()
    assert rc == 0, cap.out + cap.err
    g = json.loads((bundle / "gate.json").read_text())
    assert g["verdict"] == "passed" and g["metric"] == "FID"
    rules = {r["rule"]: r for r in g["rules"]}
    assert rules["fd"]["passed"] and rules["fd"]["value"] > 0
    for name in ("precision", "recall"):
        assert rules[name]["value"] is None and rules[name]["passed"]
        assert rules[name]["text"].endswith("rule off (0)")
    assert g["real_floor"]["split"] == "train" and g["real_floor"]["n"] == 8


def test_sample_cli_walk_bad_inputs(tiny_bundles, tmp_path, capsys):
    out = tmp_path / "walk.gif"
    dc = str(tiny_bundles["dcgan"])
    for argv, match in [
        ([dc, "--walk", "5", "--out", out], "at least 2 seeds"),
        ([dc, "--walk", "1,2", "--frames", "0", "--out", out], "frames 0"),
        ([dc, "--walk", "1,2", "--fps", "0", "--out", out], "1..50"),
        ([dc, "--walk", "1,2", "--out", tmp_path / "walk.png"], ".gif or .webp"),
        ([dc, "--walk", "1,2", "--space", "w", "--out", out], "StyleGAN"),
        ([dc, "--walk", "1,x", "--out", out], "'x'"),
        ([dc, "--walk", "1,2"], "--out"),
    ]:
        _expect_error(sample_main, argv, capsys, match)
    assert not out.exists() and _leftovers(tmp_path) == []
    assert sample_main([dc, "--walk", "1,2", "--frames", "3", "--out", str(out)]) == 0
    assert "4-frame walk" in capsys.readouterr().out and out.stat().st_size > 0


def test_export_takes_the_best_checkpoint_when_the_run_kept_one(tmp_path):
    """``--checkpoint auto`` (the default): the run's best.pt (lowest online FD) when there is
    one, else the latest; ``latest`` still takes the last."""
    from tests.conftest import train_run
    from training.checkpoint import latest_checkpoint

    run = train_run("dcgan", tmp_path / "run", ckpt_every=2)  # checkpoints at steps 2 and 4
    latest = latest_checkpoint(run)
    with one_torch_thread():
        assert export_main([str(run), "--out", str(tmp_path / "a"), "-q"]) == 0
        shutil.copy(latest, run / "checkpoints" / "best.pt")
        (run / "checkpoints" / latest.name).unlink()  # best.pt is now the only copy of it
        earlier = latest_checkpoint(run)
        assert export_main([str(run), "--out", str(tmp_path / "b"), "-q"]) == 0
        argv = [str(run), "--out", str(tmp_path / "c"), "--checkpoint", "latest", "-q"]
        assert export_main(argv) == 0
    source = {k: json.loads((tmp_path / k / "manifest.json").read_text())["source"] for k in "abc"}
    assert source["a"]["checkpoint"].endswith(latest.name)
    assert source["b"]["checkpoint"].endswith("best.pt")
    assert source["c"]["checkpoint"].endswith(earlier.name) and earlier != latest
