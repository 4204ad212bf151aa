"""Moved to :mod:`gancore.images` (torch-free); this name stays for existing imports."""

from gancore.images import *  # noqa: F403
