"""Moved to :mod:`gancore.sampling` (torch-free); this name stays for existing imports."""

from gancore.sampling import *  # noqa: F403
from gancore.sampling import _RANGE, _check_psi, _chunks, _labels, _require_stylegan  # noqa: F401
