"""The HTTP API's request and response models (pydantic; torch-free).

Requests are validated with these models (``model_validate_json`` on the raw body); responses are
built as plain dicts on the hot path and the same models describe them in ``/docs.json`` (the tests
and the schemathesis run check that every response matches its model).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from gancore.images import DEFAULT_QUALITY
from gancore.sampling import MAX_FPS, MAX_SEED, MIN_FPS, WALK_FPS, WALK_FRAMES

Seed = Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)]
Truncation = Annotated[
    float,
    Field(
        ge=-2.0,
        le=2.0,
        allow_inf_nan=False,
        description="1 = no truncation; DCGAN/cGAN allow 0.05 <= psi <= 1, StyleGAN-lite -2..2",
    ),
]
ClassLabel = StrictInt | str
Output = Literal["json", "image", "grid"]
Format = Literal["png", "webp", "jpeg"]
Method = Literal["none", "top_k", "drs"]
Count = Annotated[int, Field(strict=True, ge=1)]
_FORBID = ConfigDict(extra="forbid")


class QualityFilter(BaseModel):
    """Discriminator quality filter: keep the best ``n`` of ``n * oversample`` (top_k) or accept by
    calibrated discriminator rejection sampling (drs)."""

    model_config = _FORBID
    method: Method = "none"
    oversample: Count = 4


class _Request(BaseModel):
    model_config = _FORBID
    model: str = Field(description="a served model's name (GET /models)")
    truncation: Truncation = 1.0
    output: Output = Field(
        "json",
        description="json: base64 images with what each one is; image: the one image as a binary "
        "response; grid: every image tiled into one binary picture",
    )
    format: Format = "png"
    quality: Annotated[int, Field(strict=True, ge=1, le=100)] = Field(
        DEFAULT_QUALITY, description="webp/jpeg quality (png is lossless)"
    )
    scale: Count = Field(1, description="integer upscaling (nearest) of binary image/grid output")


class GenerateRequest(_Request):
    n: Count = 1
    seeds: list[Seed] | None = None
    seed: Seed | None = Field(None, description="first seed of seed..seed+n-1 (default 0)")
    filter: QualityFilter = Field(default_factory=QualityFilter)


class GenerateConditionalRequest(GenerateRequest):
    class_label: ClassLabel | list[ClassLabel] = Field(
        description="class index, class name, or a list of them (n images per class)"
    )


class StyleMixRequest(_Request):
    row_seeds: list[Seed]
    col_seeds: list[Seed]
    col_styles: list[StrictInt] | str = Field(
        "coarse", description="layer indices, ranges like '0-3', or coarse/middle/fine"
    )


class InterpolateRequest(_Request):
    output: Literal["json", "image", "grid", "animation"] = Field(
        "json",
        description="json: base64 images with what each one is; image: the one image as a binary "
        "response; grid: every image tiled into one binary picture; animation: a looping "
        "gif/webp walk through all the seeds (frames, loop, fps)",
    )
    format: Literal["png", "webp", "jpeg", "gif"] = Field(
        "png",
        description="png/webp/jpeg for json, image and grid; gif (the default) or webp (lossless) "
        "for an animation",
    )
    seeds: Annotated[list[Seed], Field(min_length=2)] = Field(
        description="two seeds (the path's ends); an animation walks through two or more"
    )
    steps: Annotated[int, Field(strict=True, ge=2)] = 8
    space: Literal["z", "w"] = "z"
    class_label: ClassLabel | None = None
    frames: Count = Field(
        WALK_FRAMES,
        description="animation: frames per segment (seed to next seed); in all, frames x "
        "segments (+1 for the last seed of an open walk) up to the max_frames limit",
    )
    loop: bool = Field(False, description="animation: walk back from the last seed to the first")
    fps: Annotated[int, Field(strict=True, ge=MIN_FPS, le=MAX_FPS)] = Field(
        WALK_FPS, description="animation: frames per second"
    )

    def animation_format(self) -> str:
        """An animation's format: the one asked for, gif when none was."""
        return self.format if "format" in self.model_fields_set else "gif"


# -- responses --------------------------------------------------------------------------------
class ClassOut(BaseModel):
    index: int
    name: str


class StyleOut(BaseModel):
    """Where a cell's styles came from (style mixing) or where it lies on a path (interpolation)."""

    source: Literal["row", "col", "mix", "interpolation"]
    row_seed: int | None = None
    col_seed: int | None = None
    col_styles: list[int] | None = None
    from_seed: int | None = None
    to_seed: int | None = None
    t: float | None = None
    space: Literal["z", "w"] | None = None


class ImageOut(BaseModel):
    seed: int | None = Field(description="null for interpolation steps")
    class_: ClassOut | None = Field(alias="class")
    style: StyleOut | None
    score: float | None = Field(
        description="the discriminator's logit for this image (null: the model has none)"
    )
    data: str = Field(description="the encoded image, base64 (see format / media_type)")


class FilterReport(BaseModel):
    method: Method
    oversample: int
    generated: int = Field(description="images computed as candidates")
    returned: int
    acceptance_rate: float
    shortfall: int | None = Field(None, description="images asked for but not accepted")


class ImagesResponse(BaseModel):
    model: str
    kind: Literal["dcgan", "cgan", "stylegan"]
    truncation: float
    ungated: bool = Field(description="true when served with GAN_ALLOW_UNGATED (not gated)")
    format: Format
    media_type: str
    count: int
    images: list[ImageOut]
    filter: FilterReport | None = None
    col_styles: list[int] | None = None
    rows: int | None = None
    cols: int | None = None
    space: Literal["z", "w"] | None = None


class GateOut(BaseModel):
    passed: bool
    verdict: str
    reason: str | None = None
    metric: str | None = None
    distance: float | None = None
    threshold: float | None = None
    n: int | None = None
    extractor: str | None = None


class ModelOut(BaseModel):
    name: str
    kind: Literal["dcgan", "cgan", "stylegan"]
    resolution: int
    channels: int
    latent_dim: int
    conditional: bool
    classes: list[str]
    provider: str
    gate: GateOut
    ungated: bool
    fused_render: bool
    filters: list[Method]
    latent_code: int | None = Field(
        None,
        description="values of the generator's categorical latent code (null: none); the argmax "
        "of z's first latent_code components picks the mode a seed draws",
    )
    num_ws: int | None = None
    w_dim: int | None = None
    style_ranges: dict[str, list[int]] | None = None

    @classmethod
    def from_info(cls, info: Any) -> ModelOut:
        """The /models entry of a served model (serving.engine.ModelInfo)."""
        stylegan = info.kind == "stylegan"
        return cls(
            name=info.name,
            kind=info.kind,
            resolution=info.resolution,
            channels=info.channels,
            latent_dim=info.latent_dim,
            conditional=info.num_classes > 0,
            classes=info.class_names,
            provider=info.provider,
            gate=GateOut.model_validate(info.gate),
            ungated=info.ungated,
            fused_render=info.fused,
            filters=["none"]
            + (["top_k"] if info.scored else [])
            + (["drs"] if info.scored and info.drs_ready else []),
            latent_code=info.latent_code or None,
            num_ws=info.num_ws if stylegan else None,
            w_dim=info.w_dim if stylegan else None,
            style_ranges=info.style_ranges if stylegan else None,
        )


class LimitsOut(BaseModel):
    max_n: int
    max_grid: int
    max_generated: int
    max_oversample: int
    max_steps: int
    max_frames: int
    max_scale: int
    max_body_bytes: int


class ModelsResponse(BaseModel):
    models: list[ModelOut]
    limits: LimitsOut
    default_filter: Method
    batching: bool
    formats: list[Format]


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: what is wrong, which field, and (validation errors) the details."""

    error: str
    field: str | None = None
    detail: Any = None
