"""Exceptions that carry a message meant for the user.

Every error a user can cause (a bad file, a bad option, a missing pretrained weight) is raised
as a subclass of :class:`ImtranslateError`. The command line prints its message without a
traceback and exits with status 2.
"""
from __future__ import annotations


class ImtranslateError(Exception):
    """Base class of every error whose message tells the user what to do."""


class ConfigError(ImtranslateError):
    """A configuration file or ``key=value`` override is wrong."""


class DataError(ImtranslateError):
    """A dataset or an input file cannot be used. The message names the file."""

    def __init__(self, path, problem: str, hint: str = ""):
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        msg = f"{self.path}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class WeightsMissingError(ImtranslateError):
    """A pretrained network was asked for but its weights are not on this machine."""


class CheckpointError(ImtranslateError):
    """A checkpoint file is missing, truncated or was not written by imtranslate."""


class TrainingDiverged(ImtranslateError):
    """A loss or weight became NaN/inf: the run stopped, the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM stopped training after a checkpoint; ``signum`` says which signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
