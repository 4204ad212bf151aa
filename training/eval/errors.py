"""Evaluation errors: all are :class:`training.errors.UserError`, so CLIs print them and exit 2."""

from __future__ import annotations

from training.errors import UserError


class EvalError(UserError):
    """Bad input to an evaluation (sample size, images, arguments)."""


class RefStatsError(UserError):
    """A reference-statistics file is missing, corrupt or was made for something else."""


class IncompatibleStats(RefStatsError):
    """Two statistics were made with different extractors, preprocessing, datasets or resolutions."""


class ExtractorError(UserError):
    """Feature-extractor weights are missing, corrupt or not the ones expected."""
