"""One error family: every user-facing failure is an :class:`EffivmtError`.

The CLI turns these into one line on stderr and exit code 2 (a traceback only with ``--debug``).
Messages say what is wrong; ``hint`` says what to do about it.
"""

from __future__ import annotations


class EffivmtError(Exception):
    """A failure the user can fix: bad input, wrong folder, adapter that does not fit."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class VideoError(EffivmtError):
    """A clip that is missing, unreadable, empty or too short."""


class ModelFolderError(EffivmtError):
    """A path given as a Wan model that is not a diffusers-format Wan folder."""


class AdapterMismatchError(EffivmtError):
    """A LoRA adapter whose keys or shapes do not fit the chosen model."""


class ConfigError(EffivmtError):
    """A recipe or argument value that is out of range or unknown."""
