"""The one error type of ganeti-ceph and how it becomes an exit code.

Every failure a user can see is a GanetiCephError with a one-line message
that says what is wrong and what to do. Entry points wrap their main in
`run_main`, which prints that line to stderr and exits with the error's code.
"""

from __future__ import annotations

import argparse
import errno as _errno
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn


class GanetiCephError(Exception):
    """A failure with a one-line, user-facing message."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(GanetiCephError):
    """Bad input from the user: arguments, names, sizes, parameters."""

    exit_code = 2


class ConfigError(GanetiCephError):
    """Missing or malformed configuration."""

    exit_code = 3


class CephUnavailable(GanetiCephError):
    """The cluster could not be reached within the configured timeout."""

    exit_code = 4


class ToolFailed(GanetiCephError):
    """An external program (rbd, losetup, gnt-*, ceph-volume...) was missing,
    ran past its bound or failed; `kind` says which: "missing", "late", "failed"."""

    def __init__(self, message: str, kind: str = "failed") -> None:
        super().__init__(message)
        self.kind = kind


class GanetiFailed(GanetiCephError):
    """Ganeti failed a command, did not finish it in time, or told us something we cannot read."""


class SshError(GanetiCephError):
    """A node could not be reached or driven over SSH: the node, not Ceph, is the problem."""

    exit_code = 6


class CephError(GanetiCephError):
    """Ceph answered, but refused or failed the operation."""

    exit_code = 5

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class NotFound(CephError):
    """The pool, image or snapshot does not exist."""


class Busy(CephError):
    """The object is in use (watchers, locks, children)."""


_UNREACHABLE = {_errno.ETIMEDOUT, _errno.ECONNREFUSED, _errno.EHOSTUNREACH, _errno.ENETUNREACH}


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    return abs(code) if isinstance(code, int) else None


def from_errno(cluster: str, what: str, code: int | None, detail: str, timed_out: bool = False) -> GanetiCephError:
    """Map an errno from Ceph to our error classes, naming the cluster.

    One place maps errno to meaning, like the mgr rbd_support module does.
    """
    text = f"cluster {cluster}: {what} failed: {detail}"
    if timed_out or code in _UNREACHABLE:
        return CephUnavailable(
            f"cluster {cluster}: {what} timed out or could not reach the monitors "
            f"({detail}); check that the cluster is up and the conf's mon_host is right"
        )
    if code == _errno.ENOENT:
        return NotFound(text, code)
    if code in (_errno.EBUSY, _errno.ENOTEMPTY, _errno.EEXIST):
        return Busy(text, code)
    if code in (_errno.EACCES, _errno.EPERM):
        return CephError(text + "; check the client's caps and keyring", code)
    return CephError(text, code)


@contextmanager
def ceph_errors(cluster: str, what: str) -> Iterator[None]:
    """Turn librados/librbd exceptions into our error type, so callers never
    see a raw rados.Error or a traceback."""
    try:
        yield
    except GanetiCephError:
        raise
    except Exception as exc:  # librados raises many unrelated classes
        if exc.__class__.__module__ not in ("rados", "rbd"):
            raise
        timed_out = exc.__class__.__name__ in ("TimedOut", "InterruptedOrTimeoutError")
        raise from_errno(cluster, what, _errno_of(exc), str(exc) or exc.__class__.__name__, timed_out) from exc


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one UsageError line (run_main prints it), not usage lines plus one."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see {self.prog} --help")


def run_main(prog: str, main: Callable[[], int | None]) -> NoReturn:
    """Run an entry point: errors become one stderr line and an exit code."""
    try:
        code = main() or 0
    except GanetiCephError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
