"""Moved to :mod:`gancore.bundle` (torch-free); this name stays for existing imports."""

from gancore.bundle import *  # noqa: F403
from gancore.bundle import _ort_providers, _OrtGraph, _TorchScriptGraph  # noqa: F401
