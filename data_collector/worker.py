"""ganeti-ceph-mond's collector process: the Ceph side of each refresh, in a child the daemon supervises.

librados runs in the address space of whoever calls it, and a bug there ends that process:
Debian's Ceph 16.2 client corrupted its heap ("free(): invalid size", SIGABRT) while two of
three mons were down and it hunted for one, and took the whole HTTP daemon with it. So the
daemon never loads librados. One long-lived child holds the one connection (a report's cost
stays independent of the cluster's size) and makes each report, node facts included
(gather.Collector); the daemon asks it for one report at a time over a pipe, bounded by
gather.deadline plus START_S. A child that dies, is late or answers garbage is killed with
its process group and reaped; that refresh is a code-2 report saying what happened, and a
new child starts: at once after a first failure, then after a backoff doubling up to
MAX_BACKOFF_S, so a crash loop does not spin.

    (daemon) Supervisor.report  <->  JSON lines on the child's stdin/stdout  <->  serve (child)

The first line to the child is the daemon's config (as config.dump writes it: keys only as
keyring paths, and nothing in argv); each further line asks for one report, answered by one
line of JSON. The child's stderr comes back through a pipe and the daemon relays it line by
line to its own, so it follows the daemon's log across a reopen (logrotate) and names the pid.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import select
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

import yaml

from data_collector import gather
from data_collector.cli import unknown_report
from ganeti_ceph import config, procs, runner
from ganeti_ceph.config import Config

MODULE = "data_collector.worker"
START_S = 5.0  # beyond gather.deadline: a new child's interpreter start and imports, on a busy node
CLOSE_S = 2.0  # at stop, an idle child may close its session (a goodbye to the mons) this long
MAX_BACKOFF_S = 60.0
ORPHAN_CHECK_S = 0.5


def backoff(failures: int) -> float:
    """Seconds before the next child after `failures` failures in a row: none after the first (a one-off
    crash costs one refresh), then 1, 2, 4... up to MAX_BACKOFF_S."""
    return 0.0 if failures <= 1 else min(MAX_BACKOFF_S, 2.0 ** (failures - 2))


class Lost(Exception):
    """The child died, was late or broke the protocol; the message says which ("died (SIGABRT)")."""


class Child:
    """One collector process, seen from the daemon. Only the refresh thread reads and writes its pipes;
    any thread may kill it (a signal)."""

    def __init__(self, cfg: Config) -> None:
        self.proc = subprocess.Popen(procs.boot_argv(MODULE, str(os.getpid())), bufsize=0, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                     env=procs.DAEMON_ENV)
        self._pending = b""
        threading.Thread(target=self._relay, name=f"collector-{self.proc.pid}-stderr", daemon=True).start()
        with contextlib.suppress(OSError):  # a child already dead is found by the first ask
            self._send({"config": config.dump(cfg), "source": cfg.source})

    def _relay(self) -> None:
        """The child's stderr into the daemon's, a line at a time, keys redacted; ends with the child."""
        with io.BufferedReader(self.proc.stderr) as err:
            for line in err:
                text = runner.redact(line.decode(errors="replace").rstrip())
                print(f"collector process {self.proc.pid}: {text}", file=sys.stderr, flush=True)

    def _send(self, message: Any) -> None:
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    def ask(self, bound: float) -> dict[str, Any]:
        """One report; Lost if the child dies, breaks the protocol or has not answered within `bound` s."""
        try:
            self._send("report")
            line = self._line(time.monotonic() + bound)
        except (OSError, ValueError, EOFError):  # a broken pipe, or the end of its output: it died
            raise Lost(f"died ({procs.how_ended(self.proc)})") from None
        if line is None:
            raise Lost(f"did not answer within {bound:.0f} s and was killed")
        try:
            rep = json.loads(line)
        except ValueError:
            rep = None
        if not isinstance(rep, dict):
            raise Lost(f"answered something other than a report ({line[:60]!r}) and was killed")
        return rep

    def _line(self, deadline: float) -> bytes | None:
        """The next line of its output, None if none came by `deadline`; EOFError at its end."""
        poller = select.poll()
        poller.register(self.proc.stdout.fileno(), select.POLLIN)
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if poller.poll(math.ceil(left * 1000)):
                chunk = self.proc.stdout.read(1 << 16)
                if not chunk:
                    raise EOFError
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def kill(self) -> None:
        """SIGKILL it (and whatever it started), and reap it: from any thread."""
        procs.kill_group(self.proc)

    def close(self, wait: float) -> None:
        """End of stdin ends an idle child (it closes its session first); after `wait` s it is killed. Reaped,
        its pipes closed (its stderr by the relay)."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(wait)
        self.kill()  # kill_group leaves a reaped child (whose pid may be another's by now) alone
        self.proc.stdout.close()


class Supervisor:
    """The daemon's collector process: asked for each report, replaced when it fails.

    report() runs in the daemon's refresh thread only; kill() may come from any thread."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.bound = gather.deadline(cfg) + START_S
        self._child: Child | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._failures, self._not_before, self._trouble = 0, 0.0, ""

    def report(self) -> dict[str, Any]:
        """The child's report, or a code-2 one saying why there is none: never raises for the child's
        trouble, and returns within `bound` seconds (plus a reap)."""
        child = self._running()
        if child is None:
            return self._unknown()
        try:
            rep = child.ask(self.bound)
        except Lost as exc:
            child.close(0)
            return self._failed(f"the collector process {child.proc.pid} {exc}")
        self._failures, self._trouble = 0, ""
        return rep

    def _running(self) -> Child | None:
        """The child, started if there is none and no backoff holds it back."""
        with self._lock:
            if self._child is None and not self._closed and time.monotonic() >= self._not_before:
                try:
                    self._child = Child(self.cfg)
                except OSError as exc:  # out of processes or fds: a later refresh tries again
                    self._failed_locked(f"the collector process could not start ({exc.strerror})")
                    print(f"ganeti-ceph-mond: {self._trouble}", file=sys.stderr, flush=True)
            return self._child

    def _failed(self, trouble: str) -> dict[str, Any]:
        with self._lock:
            self._child = None
            self._failed_locked(trouble)
        self._running()  # at once after a first failure: it starts while the daemon waits for the next refresh
        message = self._message()
        print(f"ganeti-ceph-mond: {message}", file=sys.stderr, flush=True)
        return unknown_report(message, self.cfg.cluster)

    def _failed_locked(self, trouble: str) -> None:
        self._failures += 1
        self._not_before = time.monotonic() + backoff(self._failures)
        self._trouble = trouble + (f" ({self._failures} failures in a row)" if self._failures > 1 else "")

    def _unknown(self) -> dict[str, Any]:
        return unknown_report(self._message(), self.cfg.cluster)

    def _message(self) -> str:
        with self._lock:
            if self._closed:
                return "the daemon is stopping"
            if self._child is not None:
                return f"{self._trouble}; restarted"
            return f"{self._trouble}; restarting it in {max(0.0, self._not_before - time.monotonic()):.0f} s"

    def kill(self) -> None:
        """Stop now, from any thread: no new child, and the current one killed (an ask under way sees it die)."""
        with self._lock:
            self._closed = True
            child = self._child
        if child is not None:
            child.kill()

    def close(self) -> None:
        """Stop from the refresh thread: an idle child gets CLOSE_S to close its session, then is killed."""
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
        if child is not None:
            child.close(CLOSE_S)


# -- the child ----------------------------------------------------------------------------------

def _orphan_guard(parent: int) -> None:
    """End this process once the daemon is gone: the end of stdin tells an idle child, not one stuck in
    a librados call (the daemon's own stop kills it; this is for a daemon killed itself)."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(1)


def serve(parent: int) -> None:
    """Answer the daemon (pid `parent`): its config on the first line of stdin, then one report a line."""
    threading.Thread(target=_orphan_guard, args=(parent,), daemon=True).start()
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what librados or a library prints goes to the log, never between the answers
    first = sys.stdin.readline()
    if not first:
        return
    hello = json.loads(first)
    cfg = config.parse(yaml.safe_load(hello["config"]), hello["source"])
    collector = gather.Collector(cfg)
    try:
        for _ in sys.stdin:
            try:
                rep = collector.report()
            except Exception as exc:  # a bug must not stop the refreshes: say so, log it, go on
                traceback.print_exc()
                rep = unknown_report(f"collector error: {exc!r}", cfg.cluster)
            answers.write(json.dumps(rep) + "\n")
            answers.flush()
    finally:
        collector.close()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
