"""Looking at processes through /proc: state, argv, and who uses a path.

Shared by the daemon manager, the mappers and the tests. Zombies count as
dead: on hosts whose init does not reap (containers, our CI), they linger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ganeti_ceph import atomic, runner


def stat(pid: int) -> tuple[str, int] | None:
    """(one-letter state: R, S, Z..., start time in clock ticks since boot) of `pid`, or None if there
    is no such process. The start time tells a process from a later one that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def state(pid: int) -> str | None:
    """The one-letter state (R, S, Z...) or None if there is no such process."""
    found = stat(pid)
    return found[0] if found else None


def alive(pid: int) -> bool:
    s = state(pid)
    return s is not None and s != "Z"


def systemd_unit(pid: int) -> str | None:
    """The systemd service whose cgroup holds `pid` ("x.service"), or None (not under systemd)."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            return unit_of_cgroup(fh.read())
    except OSError:
        return None


def unit_of_cgroup(text: str) -> str | None:
    """The innermost `*.service` in a /proc/<pid>/cgroup text (v1 or v2), or None."""
    units = [part for line in text.splitlines() for part in line.split(":", 2)[-1].split("/")
             if part.endswith(".service")]
    return units[-1] if units else None


def cmdline(pid: int | str) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def find(binary: str | None = None, arg: str | None = None, substring: str | None = None) -> list[int]:
    """Live pids whose argv[0] is `binary`, holding `arg` exactly, or mentioning `substring`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = cmdline(entry)
        if not argv or (binary and os.path.basename(argv[0]) != binary) or (arg and arg not in argv):
            continue
        if substring and not any(substring in a for a in argv):
            continue
        if alive(int(entry)):
            found.append(int(entry))
    return found


def boot_argv(module: str, *args: str) -> list[str]:
    """Run `module` isolated (-I) from the tree this code was loaded from,
    so the agent and its workers run the same code as whoever started them,
    whatever an installed copy of the package holds."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    boot = (f"import runpy, sys; sys.path[:0] = [{root!r}]; del sys.argv[0]; "
            "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")
    return [sys.executable, "-I", "-c", boot, module, *args]


# -- our own long-lived helpers (the provider agent, the collector daemon) -----

DAEMON_ENV = runner.clean_env(runner.SYSTEM_PATH)
REAP_S = 10.0  # a SIGKILLed process in uninterruptible sleep (a dead FUSE mount) may take a while


def pid_from_file(pidfile: str, module: str) -> int | None:
    """The pid in `pidfile` if that process lives and runs `python -m module`."""
    try:
        with open(pidfile) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and module in cmdline(pid) else None


def status(prog: str, pid: int | None) -> int:
    """A daemon's `status` action: one line on stdout, exit 0 only while it runs."""
    print(f"{prog}: {'running, pid ' + str(pid) if pid else 'not running'}")
    return 0 if pid else 1


def reload(prog: str, pid: int | None) -> int:
    """A daemon's `reload` action: SIGHUP, on which it reopens its log (logrotate's postrotate runs this,
    so that a daemon started by hand follows the rotation too); exit 1 with a line if none runs."""
    if not pid:
        print(f"{prog}: not running; nothing to reload", file=sys.stderr)
        return 1
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
    return 0


def spawn(argv: list[str], log: str, ready: Callable[[subprocess.Popen], bool], wait: float = 10.0) -> bool:
    """Start argv detached (own session, clean environment, output to `log`);
    True once `ready(child)` holds, False if the child exits or `wait` passes."""
    fd = open_log(log)
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                                 env=DAEMON_ENV)
    finally:
        os.close(fd)
    state = runner.until(time.monotonic() + wait,
                         lambda: "ready" if ready(child) else "exited" if child.poll() is not None else "")
    return state == "ready"


def kill_group(proc: subprocess.Popen, reap: float = REAP_S) -> None:
    """SIGKILL a child started in a session of its own (start_new_session) and everything it started
    there, then reap it within `reap` seconds: a worker whose call or answer is late. A child already
    reaped is left alone: its pid, and so its group's id, may be someone else's by now."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(reap)


def how_ended(proc: subprocess.Popen, wait: float = 1.0) -> str:
    """How a child ended, for a message: "exit 1", "SIGABRT"..., or "still running" after `wait` seconds."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(wait)
    code = proc.returncode
    if code is None or code >= 0:
        return "still running" if code is None else f"exit {code}"
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def terminate(pid: int | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; fine if already gone."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not runner.until(time.monotonic() + grace, lambda: not alive(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def open_log(path: str) -> int:
    """`path` opened for appending (made, with its directory, if missing): a daemon's log."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def log_to(path: str) -> None:
    """Point fds 1 and 2 at `path`: print() and tracebacks go there, and so
    does the output of every child started from now on (they inherit them)."""
    fd = open_log(path)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def defer_hup() -> None:
    """First thing in a daemon's main: until serve_until_signalled takes SIGHUP over, one (logrotate,
    `systemctl reload`) does nothing instead of ending the daemon by its default action, which systemd's
    Restart=on-failure would not restart. Nothing is lost: the log is opened by name after this. A handler,
    not SIG_IGN, which every program the daemon starts would inherit."""
    signal.signal(signal.SIGHUP, lambda *_: None)


def serve_until_signalled(server: Any, prog: str, pidfile: str, banner: str, log: str | None = None,
                          on_reopen: Callable[[], None] | None = None) -> None:
    """Write our pid, make SIGTERM/SIGINT shut `server` down cleanly, and
    serve until then; the caller cleans up after it returns.

    With `log`, output goes to that file (appended), and SIGHUP reopens it
    (logrotate renames the file, then signals), after which `on_reopen`
    runs, e.g. to retire children that still hold the old file. Handlers
    only start threads: the work (locks, I/O) must not run inside a signal
    handler, which interrupts the main thread anywhere."""
    if log:
        log_to(log)
    reopening = threading.Lock()

    def reopen() -> None:
        with reopening:
            if not log:
                print(f"{prog}: SIGHUP: no --log file to reopen (output goes to stderr)", file=sys.stderr, flush=True)
                return
            try:
                log_to(log)
            except OSError as exc:
                print(f"{prog}: SIGHUP: cannot reopen {log} ({exc.strerror}); still writing to the old file",
                      file=sys.stderr, flush=True)
                return
            print(f"{prog}: log reopened on SIGHUP", file=sys.stderr, flush=True)
            if on_reopen:
                on_reopen()

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reopen, daemon=True).start())
    atomic.write(pidfile, f"{os.getpid()}\n")  # after the handlers: who sees it may signal us at once
    print(f"{prog}: {banner}", file=sys.stderr, flush=True)
    server.serve_forever(poll_interval=0.5)
