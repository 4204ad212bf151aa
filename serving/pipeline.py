"""Requests -> flows -> images: the glue between a validated request and gancore's flows
(numpy only, torch-free).

The flows (``gancore.sampling``: generate, style mixing, interpolation, the filter loop) are the
ones gan-sample and the gate run; here they run on the worker's micro-batched engine
(serving/engine.py). This module checks what only a served request can get wrong (the model, the
limits, class names), and says what each image is. Every client mistake raises
:class:`ClientError` with the field and what is allowed.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gancore import sampling
from gancore.errors import ExportError
from gancore.images import FORMATS, encode, encode_animation, make_grid, to_uint8, upscale
from serving.config import Limits
from serving.engine import Engine, ModelInfo
from serving.errors import ClientError
from serving.schemas import LimitsOut, ModelOut, ModelsResponse

DEFAULT_FILTER = "none"


@dataclass
class Images:
    """A request's images with what each one is (seed, class, style source, score)."""

    model: ModelInfo
    images: np.ndarray  # [N, C, R, R] in [-1, 1]
    meta: list[dict[str, Any]]
    scores: np.ndarray
    grid_columns: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, truncation: float, fmt: str = "png", quality: int = 90) -> dict[str, Any]:
        pictures = to_uint8(self.images)
        out = []
        for meta, score, pic in zip(self.meta, self.scores, pictures):
            if meta.get("blank"):
                continue
            data = base64.b64encode(encode(pic, fmt, quality)).decode("ascii")
            score = round(float(score), 6) if np.isfinite(score) else None  # no discriminator
            out.append({**meta, "score": score, "data": data})
        return {
            "model": self.model.name,
            "kind": self.model.kind,
            "truncation": truncation,
            "ungated": self.model.ungated,
            "format": fmt,
            "media_type": FORMATS[fmt],
            "count": len(out),
            "images": out,
            **self.extra,
        }

    def to_image(self, fmt: str = "png", quality: int = 90, scale: int = 1) -> bytes:
        """The single image (the caller checked there is exactly one), upscaled ``scale`` times."""
        return encode(upscale(to_uint8(self.images[0]), scale), fmt, quality)

    def to_grid(self, fmt: str = "png", quality: int = 90, scale: int = 1) -> bytes:
        """Every image tiled into one picture, each cell upscaled ``scale`` times (nearest)."""
        grid = make_grid(self.images, nrow=self.grid_columns)
        return encode(upscale(grid, scale), fmt, quality)

    def to_animation(self, fmt: str = "gif", fps: int = sampling.WALK_FPS, scale: int = 1) -> bytes:
        """Every image a frame of one looping animation (gif | webp), upscaled ``scale`` times."""
        return encode_animation(to_uint8(self.images), fmt, fps, scale)


def _export_error(exc: ExportError, field_name: str) -> ClientError:
    return ClientError(str(exc), status=422, field=field_name)


class Pipeline:
    """Turns validated request fields into engine calls and images."""

    def __init__(self, engine: Engine, limits: Limits):
        self.engine, self.limits = engine, limits
        self.models = {m.name: m for m in engine.models}

    def describe(self) -> dict[str, Any]:
        """GET /models: what is served, the limits, the formats."""
        return ModelsResponse(
            models=[ModelOut.from_info(m) for m in self.models.values()],
            limits=LimitsOut.model_validate(vars(self.limits)),
            default_filter=DEFAULT_FILTER,
            batching=self.engine.batching,
            formats=list(FORMATS),
        ).model_dump(mode="json")

    # -- lookups and checks ----------------------------------------------------------------------
    def model(self, name: str) -> ModelInfo:
        info = self.models.get(name)
        if info is None:
            raise ClientError(
                f"unknown model {name!r}; served models: {sorted(self.models)}",
                status=404,
                field="model",
            )
        return info

    def class_index(self, info: ModelInfo, value: int | str, field_name: str) -> int:
        if info.num_classes == 0:
            raise ClientError(
                f"model {info.name!r} is unconditional ({info.kind}): do not send {field_name}",
                status=422,
                field=field_name,
            )
        if isinstance(value, str):
            if value in info.class_names:
                return info.class_names.index(value)
            raise ClientError(
                f"unknown class name {value!r} for {info.name!r}; allowed: indices "
                f"0..{info.num_classes - 1} or names {info.class_names}",
                status=422,
                field=field_name,
            )
        if not 0 <= value < info.num_classes:
            raise ClientError(
                f"class {value} is out of range for {info.name!r}: allowed 0..{info.num_classes - 1} "
                f"or names {info.class_names}",
                status=422,
                field=field_name,
            )
        return int(value)

    def check_count(self, count: int, limit: int, field_name: str, what: str) -> None:
        if count > limit:
            raise ClientError(
                f"{what} {count} is too large: at most {limit} allowed",
                status=422,
                field=field_name,
            )

    def check_truncation(self, info: ModelInfo, psi: float) -> float:
        """gancore.sampling's truncation rule (its range per kind, w_avg for StyleGAN-lite)."""
        try:
            return sampling.check_truncation(psi, info.kind, info.w_avg is not None)
        except ExportError as exc:
            raise ClientError(f"{exc} (model {info.name!r})", 422, "truncation") from None

    def labels(self, info: ModelInfo, seeds: Sequence[int], fixed: int | None) -> list:
        """One class per seed: ``fixed``, or gancore.sampling's ``seed % num_classes`` rule."""
        lab = sampling.labels_for_seeds(seeds, info.num_classes, fixed)
        return [None] * len(seeds) if lab is None else [int(x) for x in lab]

    def class_meta(self, info: ModelInfo, label: int | None) -> dict[str, Any] | None:
        if label is None:
            return None
        return {"index": int(label), "name": info.class_names[label]}

    def _labels(self, labels: Sequence[int | None]) -> np.ndarray | None:
        """A request's per-row labels as the flows take them (None: unconditional)."""
        if not labels or labels[0] is None:
            return None
        return np.asarray(labels, np.int64)

    # -- endpoints -----------------------------------------------------------------------------
    def seed_pool(
        self, seeds: list[int] | None, seed: int | None, count: int, field_name: str
    ) -> list[int]:
        if seeds is not None:
            if not seeds:
                raise ClientError("seeds is empty: give at least one", status=422, field="seeds")
            return list(seeds)
        base = 0 if seed is None else seed
        if base + count - 1 > sampling.MAX_SEED:
            raise ClientError(
                f"seed {base} + {count} images runs past the largest seed {sampling.MAX_SEED}",
                status=422,
                field=field_name,
            )
        return list(range(base, base + count))

    async def generate(
        self,
        model: str,
        n: int,
        seeds: list[int] | None,
        seed: int | None,
        truncation: float,
        filter_method: str,
        oversample: int,
        class_labels: list[int | str] | None = None,
    ) -> Images:
        """``n`` images (per class when ``class_labels`` is given), optionally filtered."""
        info = self.model(model)
        psi = self.check_truncation(info, truncation)
        fixed: list[int | None] = [None]
        if class_labels is not None:
            if info.num_classes == 0:
                raise ClientError(
                    f"model {info.name!r} is an unconditional {info.kind} model: use /generate, "
                    f"conditional models are {[m.name for m in self.models.values() if m.num_classes]}",
                    status=422,
                    field="class_label",
                )
            if not class_labels:
                raise ClientError("class_label is an empty list", status=422, field="class_label")
            fixed = [
                self.class_index(
                    info, v, f"class_label[{i}]" if len(class_labels) > 1 else "class_label"
                )
                for i, v in enumerate(class_labels)
            ]
        if seeds is not None and filter_method == "none":
            n = len(seeds)
        self.check_count(n, self.limits.max_n, "seeds" if seeds is not None else "n", "n")
        self.check_count(n * len(fixed), self.limits.max_n, "class_label", "n x classes")
        if filter_method == "none":
            budget = n
        elif seeds is not None:
            budget = len(seeds)
            if n > budget:
                raise ClientError(
                    f"n {n} is more than the {budget} candidate seeds given", 422, "n"
                )
        else:
            self.check_count(
                oversample, self.limits.max_oversample, "filter.oversample", "oversample"
            )
            budget = n * oversample
        self.check_count(
            budget * len(fixed),
            self.limits.max_generated,
            "filter.oversample",
            "images to generate",
        )
        if filter_method != "none" and not info.scored:
            raise ClientError(
                f"model {info.name!r} has no discriminator, so its images cannot be filtered: "
                "use 'none'",
                status=422,
                field="filter.method",
            )
        if filter_method == "drs" and not info.drs_ready:
            raise ClientError(
                f"model {info.name!r} has no DRS calibration in its bundle: use 'none' or 'top_k'",
                status=422,
                field="filter.method",
            )
        pool = self.seed_pool(seeds, seed, budget, "seed")

        groups = await asyncio.gather(
            *(self._filtered(info, pool, n, label, psi, filter_method) for label in fixed)
        )
        images = np.concatenate([g[0] for g in groups])
        scores = np.concatenate([g[1] for g in groups])
        meta = [m for g in groups for m in g[2]]
        generated = sum(g[3] for g in groups)
        result = Images(info, images, meta, scores, grid_columns=n if len(fixed) > 1 else None)
        result.extra["filter"] = {
            "method": filter_method,
            "oversample": oversample if filter_method != "none" else 1,
            "generated": generated,
            "returned": len(meta),
            "acceptance_rate": round(len(meta) / max(generated, 1), 6),
        }
        if len(meta) < n * len(fixed):
            result.extra["filter"]["shortfall"] = n * len(fixed) - len(meta)
        return result

    async def _filtered(
        self,
        info: ModelInfo,
        pool: list[int],
        n: int,
        fixed: int | None,
        psi: float,
        method: str,
    ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], int]:
        """(images, scores, meta, generated) for one class group: gancore's filter loop."""

        def labels_for(seeds: Sequence[int]) -> np.ndarray | None:
            return self._labels(self.labels(info, seeds, fixed))

        images, scores, kept, kept_labels, generated = await sampling.filter_flow(
            self.engine, info, pool, n, labels_for, psi, method, info.calibration
        )
        meta = [
            {
                "seed": seed,
                "class": None if kept_labels is None else self.class_meta(info, kept_labels[i]),
                "style": None,
            }
            for i, seed in enumerate(kept)
        ]
        return images, scores, meta, generated

    async def style_mix(
        self,
        model: str,
        row_seeds: list[int],
        col_seeds: list[int],
        col_styles: list[int] | str,
        truncation: float,
    ) -> Images:
        """The style-mixing grid (gancore.sampling.style_mix's layout and rules)."""
        info = self.model(model)
        if info.kind != "stylegan":
            stylegans = [m.name for m in self.models.values() if m.kind == "stylegan"]
            raise ClientError(
                f"style mixing needs a StyleGAN-lite model; {info.name!r} is {info.kind} "
                f"(StyleGAN-lite models served: {stylegans})",
                status=422,
                field="model",
            )
        psi = self.check_truncation(info, truncation)
        for name, seeds in (("row_seeds", row_seeds), ("col_seeds", col_seeds)):
            if not seeds:
                raise ClientError(f"{name} is empty: give at least one seed", 422, name)
        cells = (len(row_seeds) + 1) * (len(col_seeds) + 1)
        self.check_count(cells, self.limits.max_grid, "row_seeds", "grid cells (rows+1)x(cols+1)")
        try:
            styles = sampling.check_styles(col_styles, info.num_ws, info.style_ranges)
        except ExportError as exc:
            raise _export_error(exc, "col_styles") from None
        all_seeds = list(row_seeds) + list(col_seeds)
        labels = self.labels(info, all_seeds, None)
        images, scores = await sampling.style_mix_flow(
            self.engine, info, row_seeds, col_seeds, styles, psi, self._labels(labels)
        )
        meta: list[dict[str, Any]] = [{"blank": True}]
        for c, s in enumerate(col_seeds):
            style = {"source": "col", "col_seed": s}
            cls = self.class_meta(info, labels[len(row_seeds) + c])
            meta.append({"seed": s, "class": cls, "style": style})
        for r, rs in enumerate(row_seeds):
            cls = self.class_meta(info, labels[r])
            meta.append({"seed": rs, "class": cls, "style": {"source": "row", "row_seed": rs}})
            for cs in col_seeds:
                style = {"source": "mix", "row_seed": rs, "col_seed": cs, "col_styles": styles}
                meta.append({"seed": rs, "class": cls, "style": style})
        return Images(
            info,
            images,
            meta,
            scores,
            grid_columns=len(col_seeds) + 1,
            extra={"col_styles": styles, "rows": len(row_seeds), "cols": len(col_seeds)},
        )

    @staticmethod
    def check_space(info, space: str, what: str) -> None:
        """w exists only in StyleGAN-lite: anything else walks in z."""
        if space == "w" and info.kind != "stylegan":
            raise ClientError(
                f"{what} in w needs a StyleGAN-lite model; {info.name!r} is {info.kind}: "
                "use space 'z'",
                status=422,
                field="space",
            )

    async def interpolate(
        self,
        model: str,
        seeds: list[int],
        steps: int,
        space: str,
        truncation: float,
        class_label: int | str | None = None,
    ) -> Images:
        """Images from seeds[0] to seeds[1] (gancore.sampling.interpolate's rules)."""
        info = self.model(model)
        psi = self.check_truncation(info, truncation)
        self.check_count(steps, self.limits.max_steps, "steps", "steps")
        self.check_space(info, space, "interpolation")
        seed_a, seed_b = seeds
        fixed = None if class_label is None else self.class_index(info, class_label, "class_label")
        labels = self.labels(info, [seed_a] * steps, fixed)  # seed_a's class unless fixed
        label = labels[0]
        ts = sampling.interpolation_ts(steps)
        images, scores = await sampling.interpolate_flow(
            self.engine, info, seed_a, seed_b, steps, space, self._labels(labels), psi
        )
        meta = [
            {
                "seed": None,
                "class": self.class_meta(info, label),
                "style": {
                    "source": "interpolation",
                    "from_seed": seed_a,
                    "to_seed": seed_b,
                    "t": round(float(t), 6),
                    "space": space,
                },
            }
            for t in ts
        ]
        return Images(info, images, meta, scores, grid_columns=steps, extra={"space": space})

    async def walk(
        self,
        model: str,
        seeds: list[int],
        frames: int,
        loop: bool,
        space: str,
        truncation: float,
        class_label: int | str | None = None,
    ) -> Images:
        """The frames of a latent walk through ``seeds`` (gancore.sampling.walk's rules)."""
        info = self.model(model)
        psi = self.check_truncation(info, truncation)
        total = sampling.walk_length(len(seeds), frames, loop)
        if total > self.limits.max_frames:
            segments = len(seeds) if loop else len(seeds) - 1
            raise ClientError(
                f"frames {frames} x {segments} segments makes {total} frames: at most "
                f"{self.limits.max_frames} allowed (GAN_MAX_FRAMES)",
                status=422,
                field="frames",
            )
        self.check_space(info, space, "a walk")
        fixed = None if class_label is None else self.class_index(info, class_label, "class_label")
        labels = self.labels(info, [seeds[0]] * total, fixed)  # seeds[0]'s class unless fixed
        images, scores = await sampling.walk_flow(
            self.engine, info, seeds, frames, loop, space, self._labels(labels), psi
        )
        cls = self.class_meta(info, labels[0])
        meta = [{"seed": None, "class": cls, "style": None}] * total
        return Images(info, images, meta, scores, extra={"space": space})
