"""What every command shares: exit statuses, the one-line error, the settings a command
reads from its flags."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from idnode.errors import IdnodeError

from ..settings import Settings, add_setting_flags, existing_registry_url, settings_from_args

EXIT_OK = 0
EXIT_UNDECODABLE = 1  # also: the request was answered, with another response code
EXIT_USAGE = 2  # the command cannot run as given (the message says what to do)
EXIT_FAIL = 3  # the work itself failed (a load test whose node or generator died)

__all__ = [
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_UNDECODABLE",
    "EXIT_USAGE",
    "CommandError",
    "add_setting_flags",
    "registry_settings",
    "settings",
]


class CommandError(IdnodeError):
    """A command that cannot run as given: main prints ``idnode COMMAND: message`` on one
    line and exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def settings(args: argparse.Namespace, fallback: Mapping[str, Any] | None = None) -> Settings:
    return settings_from_args(args, fallback)


def registry_settings(args: argparse.Namespace) -> Settings:
    """The settings of a command that works on an existing registry: by default idnode.db,
    or the demo's registry when only that one is in the working directory."""
    return settings_from_args(args, {"database_url": existing_registry_url()})
