"""Feature statistics: streaming float64 mean/covariance and reference ``.npz`` files that carry
their provenance (extractor id + weights sha256 + preprocessing, dataset, resolution, split).

A reference file holds ``mu`` [d], ``sigma`` [d, d], ``n``, a JSON ``meta`` string and (for KID,
precision/recall and the per-class figures) up to ``keep`` raw ``features`` with their ``labels``.
:func:`import_stats` turns a pytorch-fid / TTUR file (``mu``, ``sigma`` only) into one, with the
source file and its sha256 in ``meta["source"]``.
It is read with ``allow_pickle=False``: loading never executes pickled code.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.eval.errors import EvalError, IncompatibleStats, RefStatsError

FORMAT_VERSION = 1
DEFAULT_KEEP = 10_000


class FeatureStats:
    """Mean and covariance of features accumulated batch by batch in float64.

    Batches are merged with Chan et al.'s pairwise update (exact, and stable even when the
    features have a large mean), so 50k samples never need to sit in memory at once. The first
    ``keep`` raw feature rows (and labels) are kept for the metrics that need samples.
    """

    def __init__(self, dim: int | None = None, keep: int = 0):
        self.dim = dim
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None  # sum of centred outer products
        self.keep = keep
        self._kept: list[np.ndarray] = []
        self._kept_labels: list[np.ndarray] = []
        self._n_kept = 0

    def update(self, feats: np.ndarray, labels: np.ndarray | None = None) -> None:
        x = np.asarray(feats)
        if x.ndim != 2:
            raise EvalError(f"features must be [N, d], got shape {x.shape}")
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise EvalError(f"features have dimension {x.shape[1]}, expected {self.dim}")
        if len(x) == 0:
            return
        if self.keep and self._n_kept < self.keep:
            take = min(len(x), self.keep - self._n_kept)
            self._kept.append(np.array(x[:take], dtype=np.float32))
            if labels is not None:
                self._kept_labels.append(np.asarray(labels[:take], dtype=np.int64))
            self._n_kept += take
        x = x.astype(np.float64, copy=False)
        nb = len(x)
        mb = x.mean(axis=0)
        xc = x - mb
        m2b = xc.T @ xc
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + np.outer(delta, delta) * (self.n * nb / n)
        self.n = n

    @property
    def mu(self) -> np.ndarray:
        self._need(1)
        return self.mean

    @property
    def sigma(self) -> np.ndarray:
        """Unbiased covariance (ddof = 1), like ``np.cov``."""
        self._need(2)
        s = self.m2 / (self.n - 1)
        return (s + s.T) / 2

    def _need(self, k: int) -> None:
        if self.n < k:
            raise EvalError(f"statistics need at least {k} samples, got {self.n}")

    @property
    def features(self) -> np.ndarray | None:
        return np.concatenate(self._kept) if self._kept else None

    @property
    def labels(self) -> np.ndarray | None:
        if not self._kept_labels or sum(len(a) for a in self._kept_labels) != self._n_kept:
            return None
        return np.concatenate(self._kept_labels)


@dataclass
class RefStats:
    """Statistics of one set of images, with everything needed to know what they are comparable to."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    extractor: dict[str, Any]  # {"id", "sha256", "preprocessing", "dim", "metric"}
    dataset: str | None = None
    resolution: int | None = None
    split: str | None = None
    class_names: list[str] = field(default_factory=list)
    features: np.ndarray | None = None
    labels: np.ndarray | None = None
    path: str | None = None
    # Imported statistics (``gan-eval import-stats``): where they came from.
    source: dict[str, Any] | None = None

    @classmethod
    def from_stats(cls, st: FeatureStats, extractor, **meta) -> RefStats:
        return cls(
            mu=st.mu,
            sigma=st.sigma,
            n=st.n,
            extractor=extractor.describe(),
            features=st.features,
            labels=st.labels,
            **meta,
        )

    @property
    def meta(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "n": int(self.n),
            "extractor": self.extractor,
            "dataset": self.dataset,
            "resolution": self.resolution,
            "split": self.split,
            "class_names": list(self.class_names),
        } | ({"source": self.source} if self.source is not None else {})

    @property
    def id(self) -> str:
        """Content digest of the statistics and their provenance (stable across save/load)."""
        h = hashlib.sha256()
        h.update(json.dumps(self.meta, sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.mu, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(self.sigma, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise EvalError(f"reference statistics must be saved as .npz, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "mu": np.asarray(self.mu, np.float64),
            "sigma": np.asarray(self.sigma, np.float64),
            "meta": np.array(json.dumps(self.meta, sort_keys=True)),
        }
        if self.features is not None:
            arrays["features"] = np.asarray(self.features, np.float32)
        if self.labels is not None:
            arrays["labels"] = np.asarray(self.labels, np.int64)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
        try:
            np.savez(tmp, **arrays)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        self.path = str(path)
        return path


def load_ref(path: str | Path) -> RefStats:
    """Read reference statistics written by :meth:`RefStats.save` (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise RefStatsError(
            f"reference statistics {str(path)!r} do not exist; make them with "
            "`gan-eval stats --dataset D --split heldout --out refs/NAME.npz`"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data["meta"]))
        mu, sigma = data["mu"], data["sigma"]
        ref = RefStats(
            mu=mu,
            sigma=sigma,
            n=int(meta["n"]),
            extractor=dict(meta["extractor"]),
            dataset=meta.get("dataset"),
            resolution=meta.get("resolution"),
            split=meta.get("split"),
            class_names=list(meta.get("class_names") or []),
            features=data.get("features"),
            labels=data.get("labels"),
            path=str(path),
            source=meta.get("source"),
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as e:
        raise RefStatsError(
            f"reference statistics {str(path)!r} are corrupt or not a ganforge reference "
            f"({e.__class__.__name__}: {str(e)[:200]}); recreate them with `gan-eval stats`"
        ) from None
    d = mu.shape[0] if mu.ndim == 1 else -1
    if d < 1 or sigma.shape != (d, d) or not np.isfinite(mu).all() or not np.isfinite(sigma).all():
        raise RefStatsError(
            f"reference statistics {str(path)!r} are corrupt: mu {mu.shape}, sigma {sigma.shape}, "
            "or non-finite values; recreate them with `gan-eval stats`"
        )
    for k in ("id", "sha256", "preprocessing"):
        if k not in ref.extractor:
            raise RefStatsError(f"reference statistics {str(path)!r} lack the extractor's {k}")
    return ref


def check_compatible(a: dict[str, Any], b: dict[str, Any], what: str = "reference") -> None:
    """Refuse to compare statistics from different extractors / weights / preprocessing.

    ``a`` and ``b`` are extractor descriptions (``Extractor.describe()`` or ``RefStats.extractor``).
    """
    if a.get("id") != b.get("id"):
        raise IncompatibleStats(
            f"feature extractor mismatch: the {what} was made with {b.get('id')!r}, "
            f"these features with {a.get('id')!r}; use the same --features"
        )
    if a.get("sha256") != b.get("sha256"):
        raise IncompatibleStats(
            f"extractor weights changed since the {what} was made: {a.get('id')} weights sha256 "
            f"{str(a.get('sha256'))[:12]}… but the {what} records {str(b.get('sha256'))[:12]}…; "
            f"recreate the {what} with `gan-eval stats`"
        )
    pa, pb = a.get("preprocessing"), b.get("preprocessing")
    if pa != pb:
        keys = sorted(
            k for k in set(pa or {}) | set(pb or {}) if (pa or {}).get(k) != (pb or {}).get(k)
        )
        diffs = ", ".join(f"{k}: {(pb or {}).get(k)!r} vs {(pa or {}).get(k)!r}" for k in keys)
        raise IncompatibleStats(f"preprocessing mismatch with the {what} ({diffs})")


def check_same_data(ref: RefStats, dataset: str | None, resolution: int | None) -> None:
    """Refuse a reference made for another dataset or resolution."""
    if dataset is not None and ref.dataset is not None and ref.dataset != dataset:
        raise IncompatibleStats(
            f"reference {ref.path or ''!s} is for dataset {ref.dataset!r}, not {dataset!r}"
        )
    if resolution is not None and ref.resolution is not None and ref.resolution != resolution:
        raise IncompatibleStats(
            f"reference {ref.path or ''!s} is for resolution {ref.resolution}, not {resolution}"
        )


def import_stats(path: str | Path, extractor: dict[str, Any], **meta) -> RefStats:
    """A reference from a pytorch-fid / TTUR statistics file (arrays ``mu`` [d], ``sigma`` [d, d]).

    ``extractor`` is the description of the network the statistics were computed with (it must
    match the file's dimension). Such files keep no features and no sample size: ``n`` is 0
    and KID / precision / recall cannot be computed against them, only the Fréchet distance.
    """
    path = Path(path)
    if not path.is_file():
        raise RefStatsError(f"statistics file {str(path)!r} does not exist")
    expected = "expected a pytorch-fid / TTUR statistics .npz with mu [d] and sigma [d, d]"
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise RefStatsError(f"{str(path)!r} is a single .npy array; {expected}")
        with z:
            missing = [k for k in ("mu", "sigma") if k not in z.files]
            if missing:
                held = ", ".join(z.files) or "nothing"
                raise RefStatsError(
                    f"{str(path)!r} has no {' or '.join(missing)} array (it holds {held}); "
                    + expected
                )
            mu = np.asarray(z["mu"], np.float64)
            sigma = np.asarray(z["sigma"], np.float64)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise RefStatsError(
            f"cannot read statistics file {str(path)!r} ({e.__class__.__name__}: "
            f"{str(e)[:200]}); {expected}"
        ) from None
    d = int(extractor["dim"])
    if mu.shape != (d,) or sigma.shape != (d, d):
        raise RefStatsError(
            f"{str(path)!r} holds mu {mu.shape} and sigma {sigma.shape}, but {extractor['id']} "
            f"statistics are mu ({d},) and sigma ({d}, {d})"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise RefStatsError(f"{str(path)!r}: mu or sigma contains NaN or inf")
    scale = max(float(np.abs(sigma).max()), 1e-300)
    if float(np.abs(sigma - sigma.T).max()) > 1e-6 * scale:
        raise RefStatsError(f"{str(path)!r}: sigma is not symmetric, so it is not a covariance")
    source = {
        "file": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "format": "pytorch-fid / TTUR statistics (mu, sigma)",
        "extractor": extractor["id"],
    }
    return RefStats(
        mu=mu, sigma=(sigma + sigma.T) / 2, n=0, extractor=dict(extractor), source=source, **meta
    )
