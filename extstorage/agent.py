"""`ganeti-ceph-agent`: a node-local helper that keeps librados connected.

A provider call is a fresh process; importing librados and connecting costs
more than the work itself. The agent runs the provider's handlers for the
thin executables (extstorage/client.py) over a root-only Unix socket, in
worker processes that keep their sessions connected between calls
(extstorage/agent_worker.py). It adds speed, not behaviour: every call gives
the same output and exit code as the in-process path, which is used
whenever no agent takes the call, and is bounded the same way: at
`timeouts.action` the call's worker is killed before the answer is sent.

    ganeti-ceph-agent start|stop|status|run [--socket PATH] [--pidfile PATH] [--log PATH]

`start` runs it in the background, `run` in the foreground (under systemd);
with --log (always with `start`) output is appended to that file and SIGHUP
reopens it, for logrotate.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import struct
import sys
import time

from extstorage import provider
from extstorage.agent_worker import Worker, WorkerLost, Workers
from extstorage.client import (
    DEFAULT_SOCKET,
    HANDSHAKE_S,
    WireError,
    decode_answer,
    decode_request,
    encode_answer,
    frame,
    recv_frame,
)
from ganeti_ceph import config, procs, runner
from ganeti_ceph.errors import ArgumentParser, GanetiCephError, run_main

DEFAULT_PIDFILE = "/run/ganeti-ceph/agent.pid"
UNIT = "ganeti-ceph-agent.service"  # packaging/systemd/
DEFAULT_LOG = "/var/log/ganeti/ceph/agent.log"  # beside the unit's, out of Ganeti's logrotate rule
STOP_WAIT_S = 8.0  # on SIGTERM, calls under way get this long (procs.terminate waits 10 s)


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def log(line: str) -> None:
    print(f"ganeti-ceph-agent: {line}", file=sys.stderr, flush=True)


class Handler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        if peer_uid(self.request) not in (0, os.getuid()):
            return  # only root (Ganeti's noded) may drive volumes
        try:
            request = recv_frame(self.request, time.monotonic() + HANDSHAKE_S)
            action, env = decode_request(request)
        except (WireError, OSError, ValueError) as exc:
            log(f"dropped a malformed or late request: {exc}")
            return
        bound = config.action_timeout(env)
        with contextlib.suppress(OSError):
            self.request.sendall(frame(f"started {bound}".encode()))
            out = self.server.run(action, request, bound)
            self.request.sendall(frame(encode_answer(out.code, out.stdout, out.stderr)))


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.workers = Workers()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        old = os.umask(0o077)
        try:
            super().__init__(path, Handler)
        finally:
            os.umask(old)
        self.workers.spare()

    def run(self, action: str, request: bytes, bound: float) -> provider.Outcome:
        """Run one call in a worker process; at `bound` (timeouts.action) the
        worker is killed, so nothing of the call happens after the answer."""
        deadline = time.monotonic() + bound
        worker: Worker | None = None
        healthy = False
        try:
            worker = self.workers.take()
            code, out, err = decode_answer(worker.call(request, deadline))
            healthy = True
            return provider.Outcome(code, out, err)
        except TimeoutError:
            return provider.Outcome(4, "", f"rbd {action}: did not finish within {bound:.0f} s (timeouts.action); "
                                           "stopped it\n")
        except (WorkerLost, OSError, ValueError) as exc:
            log(f"{action}: {exc}")
            return provider.Outcome(4, "", f"rbd {action}: {exc}; it may or may not have been done\n")
        finally:
            if worker is not None:
                self.workers.give(worker, healthy)


def serve(path: str, pidfile: str, log_path: str | None = None) -> int:
    server = Server(path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        procs.serve_until_signalled(server, "ganeti-ceph-agent", pidfile,
                                    f"serving {path} (pid {os.getpid()}, code from {root})", log_path,
                                    server.workers.renew)
    finally:
        server.server_close()
        for leftover in (path, pidfile):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        server.workers.close(STOP_WAIT_S)
    return 0


def running_pid(pidfile: str) -> int | None:
    return procs.pid_from_file(pidfile, "extstorage.agent")


def start(path: str, pidfile: str, log: str) -> int:
    pid = running_pid(pidfile)
    if pid:
        print(f"ganeti-ceph-agent: already running (pid {pid})", file=sys.stderr)
        return 0
    os.makedirs(os.path.dirname(pidfile), mode=0o700, exist_ok=True)
    argv = procs.boot_argv("extstorage.agent", "run", "--socket", path, "--pidfile", pidfile, "--log", log)
    if not procs.spawn(argv, log, lambda _: bool(running_pid(pidfile)) and os.path.exists(path)):
        raise GanetiCephError(f"ganeti-ceph-agent did not start within 10 s; see {log}")
    return 0


def stop_agent(pidfile: str) -> int:
    procs.terminate(running_pid(pidfile))
    return 0


def restart_if_running(path: str = DEFAULT_SOCKET, pidfile: str = DEFAULT_PIDFILE, log: str = DEFAULT_LOG) -> bool:
    """After an install: a running agent still runs the old code (and may speak an older wire format, so
    every call would wait for an answer that never comes); restart it. False if none was running."""
    pid = running_pid(pidfile)
    if not pid:
        return False
    if procs.systemd_unit(pid) == UNIT:  # started by its unit: restarted by it, so systemd keeps watching
        runner.run(["systemctl", "restart", UNIT], f"restart {UNIT}", 60)
        return True
    stop_agent(pidfile)
    start(path, pidfile, log)
    return True


def main(argv: list[str] | None = None) -> int:
    procs.defer_hup()  # a SIGHUP while it starts must not end it
    parser = ArgumentParser(prog="ganeti-ceph-agent", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop", "status", "run", "reload"))
    parser.add_argument("--socket", default=DEFAULT_SOCKET)
    parser.add_argument("--pidfile", default=DEFAULT_PIDFILE)
    parser.add_argument("--log", help=f"append output to this file, reopened on SIGHUP (default with start: "
                                      f"{DEFAULT_LOG}; with run: stderr)")
    args = parser.parse_args(argv)
    if args.action == "run":
        return serve(args.socket, args.pidfile, args.log)
    if args.action == "start":
        return start(args.socket, args.pidfile, args.log or DEFAULT_LOG)
    if args.action == "stop":
        return stop_agent(args.pidfile)
    if args.action == "reload":
        return procs.reload("ganeti-ceph-agent", running_pid(args.pidfile))
    return procs.status("ganeti-ceph-agent", running_pid(args.pidfile))


def entry() -> None:
    run_main("ganeti-ceph-agent", main)


if __name__ == "__main__":
    entry()
