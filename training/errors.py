"""Errors a user can act on. CLIs print them without a traceback and exit non-zero."""


class UserError(Exception):
    """A mistake in the user's input (arguments, files, data): message says what and what is allowed."""


class CheckpointError(UserError):
    """A checkpoint file is missing, truncated or corrupt."""


class TrainingDiverged(UserError):
    """A loss became NaN/inf; the last good checkpoint is kept."""
