"""The FID Inception extractor, tested with a weights file of the right structure made here
(random weights): the real file cannot be downloaded on the project's machines. Its download is
tested against a local HTTP server (the URL is overridden; the real one is never contacted)."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from gancore.bundle import sha256_file
from training.eval.cli import main as eval_main
from training.eval.errors import ExtractorError
from training.eval.features import get_extractor
from training.eval.inception import (
    FID_WEIGHTS_URL,
    URL_ENV,
    WEIGHTS_NAME,
    WEIGHTS_SHA256,
    build_fid_inception,
    download_weights,
)


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory):
    torch.manual_seed(0)
    net = build_fid_inception()
    for m in net.modules():  # init_weights=False leaves BN at identity; make it non-trivial
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    return path


def test_loads_checks_hash_and_extracts_2048_features(fake_weights):
    ext = get_extractor(
        "inception", inception_weights=fake_weights, inception_sha256=sha256_file(fake_weights)
    )
    assert ext.metric == "FID" and ext.dim == 2048 and ext.sha256 == sha256_file(fake_weights)
    assert ext.preprocessing["input_size"] == 299 and ext.preprocessing["channels"] == 3
    gray = torch.rand(2, 1, 32, 32) * 2 - 1
    f = ext.features(gray.numpy())
    assert f.shape == (2, 2048) and np.isfinite(f).all() and (f >= 0).all()
    # grayscale -> RGB is a channel repeat
    np.testing.assert_allclose(f, ext.features(gray.expand(-1, 3, -1, -1)), rtol=1e-5, atol=1e-6)
    assert not ext.can_predict  # its 1008 ImageNet classes are not the dataset's
    # ... but they give the Inception Score ("IS", not "IS-classifier").
    f2, preds, probs = ext.extract(gray.numpy())
    assert preds is None and probs.shape == (2, 1008)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(f2, f, rtol=1e-5, atol=1e-6)
    assert ext.has_class_probabilities and ext.is_metric == "IS"


def test_wrong_hash_is_refused(fake_weights):
    with pytest.raises(ExtractorError, match="not the FID Inception weights file"):
        get_extractor("inception", inception_weights=fake_weights)  # expects the real hash
    assert WEIGHTS_SHA256.startswith("6726825d")


class WeightsServer:
    """Serves ``payload`` at every path on 127.0.0.1 and counts the GET requests."""

    def __init__(self, payload: bytes):
        self.payload, self.requests = payload, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                self.wfile.write(server.payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/fid_weights/{WEIGHTS_NAME}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(payload: bytes) -> WeightsServer:
        servers.append(WeightsServer(payload))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_download_url_is_pytorch_fids():
    assert FID_WEIGHTS_URL == (
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth"
    )


def test_missing_weights_are_downloaded_once_into_torch_home(
    fake_weights, serve, tmp_path, monkeypatch
):
    srv = serve(fake_weights.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(URL_ENV, srv.url)
    sha = sha256_file(fake_weights)
    ext = get_extractor("inception", inception_sha256=sha)
    folder = tmp_path / "hub" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [WEIGHTS_NAME]  # no temp file left
    assert ext.path == folder / WEIGHTS_NAME and ext.sha256 == sha and srv.requests == 1
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    ref = get_extractor("inception", inception_weights=fake_weights, inception_sha256=sha)
    np.testing.assert_array_equal(ext.features(x), ref.features(x))
    get_extractor("inception", inception_sha256=sha)  # present now: not fetched again
    assert srv.requests == 1


def test_download_shows_a_progress_bar(fake_weights, serve, tmp_path, capsys):
    srv = serve(b"w" * 300_000)
    dest = tmp_path / "ck" / WEIGHTS_NAME
    import hashlib

    download_weights(dest, srv.url, hashlib.sha256(b"w" * 300_000).hexdigest(), progress=True)
    err = capsys.readouterr().err
    assert WEIGHTS_NAME in err and "100%" in err and "293k/293k" in err
    assert dest.read_bytes() == b"w" * 300_000


def test_wrong_hash_download_leaves_nothing_and_exits_2(serve, tmp_path, monkeypatch, capsys):
    srv = serve(b"this is not the inception network" * 1000)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(URL_ENV, srv.url)
    rc = eval_main(
        [
            "stats",
            "--dataset",
            "digits",
            "--features",
            "inception",
            "--out",
            str(tmp_path / "r.npz"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert f"the file downloaded from {srv.url} is not the FID Inception weights" in err
    assert "it was deleted and nothing was saved" in err and WEIGHTS_SHA256[:16] in err
    assert list((tmp_path / "hub" / "checkpoints").iterdir()) == []
    assert not (tmp_path / "r.npz").exists() and srv.requests == 1


def test_unreachable_server_names_the_url_and_the_folder(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_free_port()}/{WEIGHTS_NAME}"  # nothing listens there
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(URL_ENV, url)
    rc = eval_main(["stats", "--dataset", "digits", "--features", "inception", "--out", "r.npz"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    folder = tmp_path / "hub" / "checkpoints"
    assert f"the download from {url} failed" in err and f"into {folder}/" in err
    assert "--inception-weights PATH" in err
    assert list(folder.iterdir()) == []


def test_inception_weights_option_wins_over_the_download(serve, tmp_path, monkeypatch):
    srv = serve(b"x")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(URL_ENV, srv.url)
    with pytest.raises(ExtractorError, match="--inception-weights .*nope.pth' does not exist"):
        get_extractor("inception", inception_weights=tmp_path / "nope.pth")
    assert srv.requests == 0 and not (tmp_path / "hub").exists()


def test_fid_of_an_unlabelled_image_folder(fake_weights, tmp_path):
    """PATH/*.png without class subfolders: Inception statistics work, FD-classifier says no."""
    from PIL import Image

    from training.eval.score import reference_stats

    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    ext = get_extractor(
        "inception", inception_weights=fake_weights, inception_sha256=sha256_file(fake_weights)
    )
    ref = reference_stats(ext, f"folder:{tmp_path}", 16, "train", keep=0)
    assert ref.n == 10 and ref.mu.shape == (2048,) and ref.class_names == []
    with pytest.raises(ExtractorError) as e:
        get_extractor("classifier", dataset=f"folder:{tmp_path}", train_if_missing=False)
    assert "has no class subfolders" in str(e.value) and "Use --features inception" in str(e.value)


def test_unlabelled_folder_with_classifier_features_is_a_clear_cli_error(tmp_path, capsys):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(12):
        Image.new("L", (8, 8), i * 20).save(imgs / f"{i}.png")
    out = tmp_path / "r.npz"
    rc = eval_main(["stats", "--dataset", f"folder:{imgs}", "--features", "classifier",
                    "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert f"image folder {str(imgs)!r} has no class subfolders" in err
    assert "Use --features inception" in err and not out.exists()
