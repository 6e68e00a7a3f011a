"""The agent's workers: processes that run provider calls, one at a time, and can be killed.

A thread cannot be stopped: a call that outlived its bound in a thread went
on (a remove finishing after Ganeti saw failure, an open record written
after its close) and kept the image's mapping lock. So every call runs in a
worker process of its own session, which keeps its librados sessions warm
between calls; at the call's bound the agent kills the worker's whole
process group, children included, and waits for it to be gone before it
answers. A worker also kills itself if the agent is so stuck that the bound
passes unnoticed: nothing it started outlives the call's bound. If the agent
dies, an idle worker ends at once, and a busy one finishes its call within
that bound and then ends (its caller was told "it may or may not have been
done"): killed in the middle of a librados operation, it could leave a watch
that Ceph 16 never times out (tracker.ceph.com/issues/58120), and the volume
could not be removed until its OSD re-peers. Such a finished call still
serializes with the new agent's calls on the same image (the mappers' lock);
a map that was past that lock when the agent died does publish its mapping,
which Ganeti's next attach finds and its detach removes.

    (agent) Workers.take / Worker.call / Workers.give  <->  socketpair  <->  serve(fd) (worker)
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from extstorage.client import WireError, frame, recv_frame
from ganeti_ceph import config, procs, runner

MODULE = "extstorage.agent_worker"
SELF_KILL_MARGIN_S = 2.0  # the agent kills at the bound; the worker itself shortly after
MAX_IDLE = 4


class WorkerLost(Exception):
    """The worker died or broke the wire mid-call."""


class Worker:
    """One worker process, seen from the agent."""

    born = 0  # the agent's log generation when it was started (Workers.renew)

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(procs.boot_argv(MODULE, str(theirs.fileno()), str(os.getpid())),
                                         pass_fds=(theirs.fileno(),),
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=procs.DAEMON_ENV)
        finally:
            theirs.close()
        self.sock = mine

    def call(self, request: bytes, deadline: float) -> bytes:
        """Send one call and wait for its answer until `deadline`: TimeoutError
        if it is late, WorkerLost if the worker broke."""
        try:
            self.sock.sendall(frame(request))
            return recv_frame(self.sock, deadline)
        except WireError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError from None
            raise WorkerLost(f"the agent's worker {self.proc.pid} died during the call "
                             f"({procs.how_ended(self.proc)})") from exc
        except OSError as exc:
            raise WorkerLost(f"the agent's worker {self.proc.pid} broke: {exc}") from exc

    def kill(self) -> None:
        """SIGKILL the worker and everything it started in its session, then reap it."""
        procs.kill_group(self.proc)
        self.sock.close()

    def retire(self) -> None:
        """An idle worker: closing its socket ends it (EOF); reaped without waiting on it."""
        self.sock.close()
        threading.Thread(target=self.proc.wait, daemon=True).start()


class Workers:
    """The agent's worker processes: idle ones are reused, a broken one is killed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._spawning = False
        self._generation = 0
        self.busy = 0

    def _new(self) -> Worker:
        """A new worker, marked with the log generation it started under (read before it starts,
        so a reopen racing its start marks it old: retired early, never kept on the old file)."""
        born = self._generation
        worker = Worker()
        worker.born = born
        return worker

    def renew(self) -> None:
        """After the agent reopened its log: a worker writes to the stderr it was started with, the
        rotated file. Idle workers are retired now and busy ones when their call ends (within its
        bound), so none keeps the old file open; new ones get the new file. Cheaper and simpler than
        teaching workers to reopen: one worker start per rotation, and workers stay signal-free."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.retire()
        self.spare()

    def take(self) -> Worker:
        """An idle worker, or a new one; a spare is started for the next call
        (a worker's start costs more than most calls)."""
        worker = None
        with self._lock:
            while self._idle and worker is None:
                candidate = self._idle.pop()
                if candidate.proc.poll() is None:
                    worker = candidate
                else:  # died idle (poll reaped it)
                    candidate.sock.close()
            self.busy += 1
        self.spare()
        try:
            return worker or self._new()
        except BaseException:
            with self._lock:
                self.busy -= 1
            raise

    def spare(self) -> None:
        """Start one idle worker in the background unless one is idle or starting."""
        with self._lock:
            if self._idle or self._spawning:
                return
            self._spawning = True

        def spawn() -> None:
            try:
                worker = self._new()
            finally:
                with self._lock:
                    self._spawning = False
            self.give(worker, True, taken=False)

        threading.Thread(target=spawn, daemon=True).start()

    def give(self, worker: Worker, healthy: bool, taken: bool = True) -> None:
        """Back to the pool if `healthy` (retired if of an old log generation), else killed (and reaped) now."""
        if not healthy:
            worker.kill()
        with self._lock:
            self.busy -= taken
            if healthy and worker.born == self._generation and len(self._idle) < MAX_IDLE:
                self._idle.append(worker)
                return
        if healthy:
            worker.retire()

    def close(self, wait: float) -> None:
        """Retire idle workers; give busy ones up to `wait` seconds to finish."""
        runner.until(time.monotonic() + wait, lambda: not self.busy, interval=0.05)
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.retire()


# -- the worker process ---------------------------------------------------------------

def _guard(parent: int, deadline: list[float]) -> None:
    """Kill this worker's process group once the call's bound has passed (deadline[0], inf while idle:
    one item, read in one step), or once the agent is gone while idle; a call under way when the agent
    died runs on to its end (see the module's docstring), then the worker ends in serve."""
    while True:
        now = deadline[0]
        if time.monotonic() > now or (now == math.inf and os.getppid() != parent):
            os.killpg(0, signal.SIGKILL)
        time.sleep(0.1)


def serve(fd: int, agent: int) -> None:
    """Run the calls the agent (pid `agent`) sends over `fd` until it closes it.

    The guard starts first and gets the agent's pid from the agent itself: an
    agent killed while this worker was still importing must not leave it
    serving the call already queued on its socket."""
    deadline = [math.inf]
    threading.Thread(target=_guard, args=(agent, deadline), daemon=True).start()
    from extstorage import provider
    from extstorage.client import decode_request, encode_answer
    from ganeti_ceph.rbd import mappers
    from ganeti_ceph.session import SessionPool

    mappers.base.still_wanted = lambda: os.getppid() == agent
    os.environ.clear()  # as the in-process path: children inherit nothing
    os.environ.update(runner.clean_env())
    sock = socket.socket(fileno=fd)
    pool = SessionPool()
    try:
        while True:
            try:
                request = recv_frame(sock, None)
            except WireError:
                return  # the agent closed: retired
            action, env = decode_request(request)
            deadline[0] = time.monotonic() + config.action_timeout(env) + SELF_KILL_MARGIN_S
            out = provider.execute(action, env, pool)
            deadline[0] = math.inf
            try:
                sock.sendall(frame(encode_answer(out.code, out.stdout, out.stderr)))
            except OSError:
                return  # the agent is gone or gave up on this call; the guard ends the rest
    finally:
        pool.close_all()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
