"""Moved to :mod:`gancore.errors` (torch-free); this name stays for existing imports."""

from gancore.errors import *  # noqa: F403
