"""The one way ganeti-ceph runs another program, and the one deadline loop.

Every child is bounded (a timeout is required or defaulted), reads nothing
from stdin, gets a clean environment built here (inherited CEPH_ARGS,
LD_PRELOAD or a locale would change what a tool does or prints), and any
failure is one ToolFailed line naming what we tried, the tool and its last
words. Keys never go in argv: callers pass keyring paths.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from ganeti_ceph.errors import GanetiCephError, ToolFailed

# Mapping tools and Ceph's may live in /usr/local (a source build); daemons,
# hooks and Ganeti's tools use the system directories only.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TIMEOUT = 120.0

T = TypeVar("T")


def clean_env(path: str = PATH, **extra: str) -> dict[str, str]:
    """The environment of every child: a fixed PATH, the C locale, and only
    what the caller names (HOME for Ceph's tools)."""
    return {"PATH": path, "LC_ALL": "C", **extra}


CEPH_KEY = re.compile(r"AQ[A-Za-z0-9+/]{36,}={0,2}")  # a cephx secret: base64 of its 28 bytes and more


def redact(text: str) -> str:
    """`text` with every cephx key replaced by a marker: what a tool printed or logged may name one
    (ceph-volume echoes the `ceph-authtool --add-key KEY` it runs)."""
    return CEPH_KEY.sub("<key redacted by ganeti-ceph>", text)


def last_words(res: subprocess.CompletedProcess) -> str:
    """The last line a failed tool printed (stderr first), for a one-line error; keys redacted."""
    return redact((res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[-1])


def which(binary: str, path: str) -> str:
    """`binary` resolved along `path` (a caller's PATH plus the sbin dirs), else as given."""
    import shutil  # here and in follow only: shutil (bz2, lzma) and tempfile would cost every provider call

    return shutil.which(binary, path=path) or binary


def execute(argv: list[str], what: str, timeout: float = DEFAULT_TIMEOUT, *, env: dict[str, str] | None = None,
            leaves_daemon: bool = False) -> subprocess.CompletedProcess:
    """Run argv bounded by `timeout`; return its result whatever its exit code.

    Raises ToolFailed when it is not installed (kind "missing"), cannot start
    ("failed") or runs past `timeout` ("late"). `env` defaults to clean_env().

    `leaves_daemon`: the tool leaves a daemon serving the mapping behind and
    does not leave the caller's session itself (rbd-nbd map daemonizes
    without setsid), so it runs in a session of its own: the caller may be an
    agent worker whose process group is killed at a call's bound, and that
    must never take a running VM's disk with it."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL, env=clean_env() if env is None else env,
                              start_new_session=leaves_daemon)
    except FileNotFoundError:
        raise ToolFailed(f"{what}: {argv[0]} is not installed", "missing") from None
    except OSError as exc:
        raise ToolFailed(f"{what}: cannot run {argv[0]} ({exc.strerror})") from None
    except subprocess.TimeoutExpired:
        raise ToolFailed(f"{what}: {argv[0]} did not finish within {timeout:.0f} s", "late") from None


def run(argv: list[str], what: str, timeout: float = DEFAULT_TIMEOUT, *, env: dict[str, str] | None = None,
        ok: tuple[int, ...] = (0,), leaves_daemon: bool = False) -> str:
    """Run argv (see `execute`) and return its stdout; an exit code not in
    `ok` raises ToolFailed with the tool's last line."""
    res = execute(argv, what, timeout, env=env, leaves_daemon=leaves_daemon)
    if res.returncode not in ok:
        raise ToolFailed(f"{what}: {argv[0]} failed (exit {res.returncode}): {last_words(res)}")
    return res.stdout


def follow(argv: list[str], what: str, timeout: float, on_output: Callable[[str], None], *,
           env: dict[str, str] | None = None) -> None:
    """Run argv as `run` does (bounded, clean environment, ToolFailed unless it exits 0), handing what it
    prints on stdout to `on_output` as it comes: the progress of a long copy (qemu-img convert -p)."""
    import tempfile  # see which()

    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty stderr cannot stall the child
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                    env=clean_env() if env is None else env)
        except FileNotFoundError:
            raise ToolFailed(f"{what}: {argv[0]} is not installed", "missing") from None
        except OSError as exc:
            raise ToolFailed(f"{what}: cannot run {argv[0]} ({exc.strerror})") from None
        try:
            fd = proc.stdout.fileno()  # type: ignore[union-attr]
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(argv, timeout)
                if not select.select([fd], [], [], min(1.0, left))[0]:
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                on_output(chunk.decode(errors="replace"))
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise ToolFailed(f"{what}: {argv[0]} did not finish within {timeout:.0f} s", "late") from None
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
        if proc.returncode != 0:
            err.seek(0)
            res = subprocess.CompletedProcess(argv, proc.returncode, "", err.read().decode(errors="replace"))
            raise ToolFailed(f"{what}: {argv[0]} failed (exit {proc.returncode}): {last_words(res)}")


def succeeds(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> bool:
    """Whether argv exits 0 within `timeout` (a probe: a missing tool is a no)."""
    try:
        return execute(argv, shlex.join(argv), timeout, env=env).returncode == 0
    except ToolFailed:
        return False


def until(deadline: float, probe: Callable[[], T], done: Callable[[T], object] = bool, interval: float = 0.02) -> T:
    """Call `probe` until `done(answer)` holds or the monotonic `deadline`
    has passed; return its last answer (the caller tells success from time
    out with `done`). The one polling loop: a probe may raise to stop early."""
    while True:
        got = probe()
        if done(got) or time.monotonic() >= deadline:
            return got
        time.sleep(interval)


def flock(fd: int, wait: float, interval: float = 0.02) -> bool:
    """Take an exclusive flock on `fd` within `wait` seconds; False when it stays held (every lock wait
    is bounded: Ganeti has no timeouts of its own)."""
    def take() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    return until(time.monotonic() + wait, take, interval=interval)


@contextlib.contextmanager
def held(path: str, wait: float, holder: str, busy: Callable[[str], Exception],
         unusable: type[GanetiCephError] = GanetiCephError) -> Iterator[None]:
    """Hold an exclusive flock on `path` (a 0600 file in a 0700 directory, made if needed) while the block
    runs, with `holder` written in it for whoever waits; raise busy(what the holder wrote) after `wait`
    seconds, or `unusable` in one line if the file cannot be opened. The lock ends with its process,
    killed or not; the file stays."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise unusable(f"cannot open the lock {path}: {exc.strerror}; make {os.path.dirname(path)} "
                              "writable, then rerun") from None
    try:
        if not flock(fd, wait, interval=0.2):
            raise busy(os.pread(fd, 512, 0).decode(errors="replace").strip())
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
