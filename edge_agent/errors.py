"""Error kinds the daemon distinguishes, and the documented process exit codes for each."""

from __future__ import annotations

from enum import IntEnum

from edge_agent.backends.base import BackendError
from edge_agent.manifest import ManifestError
from edge_agent.settings import ConfigError


class SourceError(RuntimeError):
    """A frame source could not be opened (or failed for good). The message names the source and the cause."""


class ExitCode(IntEnum):
    OK = 0
    RUNTIME_ERROR = 1  # an unexpected failure while running
    CONFIG_ERROR = 2  # invalid configuration or command line
    MODEL_ERROR = 3  # a model file or manifest is missing, corrupt or mismatched
    SOURCE_ERROR = 4  # the frame source cannot be opened
    BACKEND_ERROR = 5  # the inference runtime/device cannot be used


def exit_code_for(exc: BaseException) -> ExitCode:
    if isinstance(exc, ConfigError):
        return ExitCode.CONFIG_ERROR
    if isinstance(exc, ManifestError):
        return ExitCode.MODEL_ERROR
    if isinstance(exc, SourceError):
        return ExitCode.SOURCE_ERROR
    if isinstance(exc, BackendError):
        return ExitCode.BACKEND_ERROR
    return ExitCode.RUNTIME_ERROR
