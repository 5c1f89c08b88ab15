"""The few exceptions fntax raises; the CLI turns each into one stderr line.

Lower layers translate OS and bcc errors here, at one point, with
``raise ... from err`` so the cause stays available under ``--debug``.
"""

from __future__ import annotations


class FntaxError(Exception):
    """Base of every error fntax reports to its user."""

    exit_code = 70  # EX_SOFTWARE: distinct from any exit code a profiled command returns commonly


class EnvironmentProblem(FntaxError):
    """The host cannot run probes: not root, no bcc, no headers, no tracefs."""

    exit_code = 69  # EX_UNAVAILABLE


class ProbeLoadError(FntaxError):
    """A probe failed to compile, load or match its declared map contract."""

    exit_code = 70


class ProbeAttachError(FntaxError):
    """A compiled probe could not be attached to its hook."""

    exit_code = 70


class InputError(FntaxError):
    """Bad input from the user: a missing command, pid, file or field."""

    exit_code = 66  # EX_NOINPUT


class ConfigError(FntaxError):
    """A malformed configuration, baseline or price file."""

    exit_code = 78  # EX_CONFIG


class AgentLost(FntaxError):
    """The agent a capture ran through stopped answering in the middle of it."""

    exit_code = 69  # EX_UNAVAILABLE
