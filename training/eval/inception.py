"""The standard FID feature network: Inception-v3 with the TF 2015 ImageNet weights, as ported to
PyTorch in the file ``pt_inception-2015-12-05-6726825d.pth``; 2048-d pool3 features.

It is torchvision's Inception-v3 with the differences of the TF graph FID was defined on: 1008
classes, average pools in the Mixed_5*/6*/7b blocks that exclude padding from the average, and a
max pool (not an average pool) in the pooling branch of Mixed_7c.

The weights come from ``--inception-weights PATH`` or ``$TORCH_HOME/hub/checkpoints/``. When that
default file is missing it is downloaded once, as pytorch-fid and torch-fidelity do, from
pytorch-fid's release (``FID_WEIGHTS_URL``; ``$GANFORGE_INCEPTION_URL`` overrides it) to a temporary
name, and renamed into place only when its sha256 is right. Loading uses ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models import inception as tv

from gancore.bundle import sha256_file
from training.eval.errors import ExtractorError
from training.eval.extractor import Extractor

log = logging.getLogger(__name__)

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
# sha256 of WEIGHTS_NAME (its name carries the first 8 hex digits, as torch hub names do).
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
# Where pytorch-fid (and torch-fidelity's FID Inception) fetch the same file.
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_NAME
)
URL_ENV = "GANFORGE_INCEPTION_URL"
DOWNLOAD_TIMEOUT_S = 30
NUM_CLASSES = 1008
INPUT_SIZE = 299
PREPROCESSING = {
    "input_size": INPUT_SIZE,
    "resize": "bilinear",
    "antialias": False,
    "align_corners": False,
    "value_range": [-1.0, 1.0],
    "channels": 3,
    "channel_rule": "gray->rgb: repeat",
}


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's average pool ignores the zero padding: count_include_pad=False.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class MixedA(tv.InceptionA):
    def _forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))]


class MixedC(tv.InceptionC):
    def _forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = layer(bd)
        return [self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool(x))]


class MixedE(tv.InceptionE):
    """Mixed_7b (``max_pool=False``) and Mixed_7c (``max_pool=True``)."""

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def _forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool(x)
        return [self.branch1x1(x), b3, bd, self.branch_pool(pooled)]


def build_fid_inception() -> tv.Inception3:
    """Inception-v3 with the FID blocks, uninitialised (weights come from the file)."""
    net = tv.Inception3(
        num_classes=NUM_CLASSES, aux_logits=False, transform_input=False, init_weights=False
    )
    for name, ch, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        setattr(net, name, MixedA(ch, pool_features=pool))
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        setattr(net, name, MixedC(768, channels_7x7=c7))
    net.Mixed_7b = MixedE(1280, max_pool=False)
    net.Mixed_7c = MixedE(2048, max_pool=True)
    return net.eval()


def pool3(net: tv.Inception3, x: torch.Tensor) -> torch.Tensor:
    """[N, 3, 299, 299] in [-1, 1] -> pool3 features [N, 2048]."""
    x = net.Conv2d_1a_3x3(x)
    x = net.Conv2d_2a_3x3(x)
    x = net.Conv2d_2b_3x3(x)
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    x = net.Conv2d_3b_1x1(x)
    x = net.Conv2d_4a_3x3(x)
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
        x = getattr(net, f"Mixed_{name}")(x)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def default_weights_path() -> Path:
    torch_home = os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch"
    return Path(torch_home) / "hub" / "checkpoints" / WEIGHTS_NAME


def weights_url() -> str:
    return os.environ.get(URL_ENV) or FID_WEIGHTS_URL


def download_weights(
    dest: str | Path | None = None,
    url: str | None = None,
    expected_sha256: str | None = None,
    progress: bool | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download the weights file to ``dest`` (default: ``$TORCH_HOME/hub/checkpoints/``).

    The bytes go to a temporary name next to ``dest`` and are hashed on the way; only a file with
    ``expected_sha256`` (default: the published file's) is renamed into place. Any failure removes the temporary file and raises
    :class:`ExtractorError` naming the URL and the folder. ``progress`` None: a progress bar when
    this module logs at INFO (the CLIs without ``-q``).
    """
    dest = Path(dest) if dest else default_weights_path()
    url = url or weights_url()
    expected_sha256 = expected_sha256 or WEIGHTS_SHA256
    folder = dest.parent
    if progress is None:
        progress = log.isEnabledFor(logging.INFO)
    by_hand = (
        f"download {url} yourself into {folder}/ (or pass --inception-weights PATH), "
        "or use --features classifier"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExtractorError(
            f"cannot create {str(folder)!r} for the FID Inception weights: {e}"
        ) from None
    tmp = folder / f".{dest.name}.part-{os.getpid()}"
    log.info(f"downloading the FID Inception weights: {url} -> {dest}")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            from tqdm import tqdm

            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=WEIGHTS_NAME,
                disable=not progress,
                leave=True,
            ) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError, http.client.HTTPException) as e:  # URLError is an OSError
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise ExtractorError(
            f"FID Inception weights not found at {str(dest)!r} and the download from {url} "
            f"failed ({e.__class__.__name__}: {str(reason)[:200]}); {by_hand}"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sha = h.hexdigest()
    if sha != expected_sha256:
        tmp.unlink(missing_ok=True)
        raise ExtractorError(
            f"the file downloaded from {url} is not the FID Inception weights: sha256 "
            f"{sha[:16]}…, expected {expected_sha256[:16]}…; it was deleted and nothing was "
            f"saved in {folder}/; {by_hand}"
        )
    os.replace(tmp, dest)
    log.info(f"saved {dest} (sha256 {sha[:16]}…)")
    return dest


class InceptionExtractor(Extractor):
    """pool3 features of the FID Inception-v3 (metric name: FID) and its 1008-way logits (IS)."""

    name = "inception"
    id = "inception-v3-fid-tf2015"
    metric = "FID"
    is_metric = "IS"
    dim = 2048
    preprocessing = PREPROCESSING
    batch = 32  # 299x299 activations: keep memory bounded
    note = "FID: standard Inception-v3 pool3 features (TF 2015 weights)"

    @classmethod
    def standard_description(cls) -> dict:
        """What :meth:`describe` gives with the published weights, without loading them: the
        extractor recorded for imported (pytorch-fid / TTUR) statistics."""
        return {
            "name": cls.name,
            "id": cls.id,
            "sha256": WEIGHTS_SHA256,
            "preprocessing": cls.preprocessing,
            "dim": cls.dim,
            "metric": cls.metric,
        }

    def __init__(
        self,
        weights: str | Path | None = None,
        expected_sha256: str | None = None,
        download: bool = True,
        url: str | None = None,
    ):
        expected = expected_sha256 or WEIGHTS_SHA256
        if weights:
            path = Path(weights)
            if not path.is_file():
                raise ExtractorError(
                    f"--inception-weights {str(path)!r} does not exist; give the path of "
                    f"{WEIGHTS_NAME}, or leave the option out to use (and, when missing, "
                    f"download) {default_weights_path()}"
                )
        else:
            path = default_weights_path()
            if not path.is_file():
                if not download:
                    raise ExtractorError(
                        f"FID Inception weights not found at {str(path)!r}; download "
                        f"{url or weights_url()} into {path.parent}/ or pass "
                        "--inception-weights PATH"
                    )
                download_weights(path, url=url, expected_sha256=expected)
        sha = sha256_file(path)
        if sha != expected:
            raise ExtractorError(
                f"{str(path)!r} is not the FID Inception weights file: sha256 {sha[:16]}… "
                f"but {WEIGHTS_NAME} has {expected[:16]}…"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.net = build_fid_inception()
            self.net.load_state_dict(state)
        except Exception as e:
            raise ExtractorError(
                f"cannot load FID Inception weights from {str(path)!r} "
                f"({e.__class__.__name__}: {str(e)[:200]})"
            ) from None
        self.sha256 = sha
        self.path = path

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(
            x.clamp(-1, 1), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False
        )
        f = pool3(self.net, x)
        # The 1008-way ImageNet logits (dropout is off in eval): what the Inception Score uses.
        return f, self.net.fc(f)
