"""Errors a user can act on (torch-free: the serving side imports this)."""


class ExportError(Exception):
    """Bad input to export, sampling or the gate; the message says what and what is allowed."""


class BundleError(ExportError):
    """A bundle is missing, malformed, tampered with, or not deployable."""
