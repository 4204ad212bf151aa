"""Moved to :mod:`gancore.filters` (torch-free); this name stays for existing imports."""

from gancore.filters import *  # noqa: F403
from gancore.filters import _logits  # noqa: F401
