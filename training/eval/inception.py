"""The standard FID feature network: Inception-v3 with the TF 2015 ImageNet weights, as ported to
PyTorch in the file ``pt_inception-2015-12-05-6726825d.pth``; 2048-d pool3 features.

It is torchvision's Inception-v3 with the differences of the TF graph FID was defined on: 1008
classes, average pools in the Mixed_5*/6*/7b blocks that exclude padding from the average, and a
max pool (not an average pool) in the pooling branch of Mixed_7c. The weights are read only from
a local file whose sha256 is checked before loading (``weights_only=True``): never downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models import inception as tv

from training.eval.classifier import sha256_file
from training.eval.errors import ExtractorError
from training.eval.features import Extractor

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
# sha256 of WEIGHTS_NAME (its name carries the first 8 hex digits, as torch hub names do).
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
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

    def __init__(self, weights: str | Path | None = None, expected_sha256: str | None = None):
        path = Path(weights) if weights else default_weights_path()
        if not path.is_file():
            raise ExtractorError(
                f"FID Inception weights not found at {str(path)!r}. They are never downloaded: "
                f"put {WEIGHTS_NAME} (sha256 {WEIGHTS_SHA256[:16]}…, from pytorch-fid's release "
                f"'fid_weights') in {default_weights_path().parent}/ (i.e. $TORCH_HOME/hub/"
                "checkpoints/) or pass --inception-weights PATH; or use --features classifier"
            )
        expected = expected_sha256 or WEIGHTS_SHA256
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
