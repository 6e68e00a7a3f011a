"""`ganeti-ceph-agent`: a node-local helper that keeps librados connected.

A provider call is a fresh process; importing librados and connecting costs
more than the work itself. The agent holds one connected session per
cluster config and runs the provider's handlers for the thin executables
(extstorage/client.py) over a root-only Unix socket. It adds speed, not
behaviour: every call gives the same output and exit code as the
in-process path, which is used whenever no agent runs.

    ganeti-ceph-agent start|stop|status|run [--socket PATH] [--pidfile PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import socketserver
import struct
import sys
import threading

from extstorage import provider
from extstorage.client import DEFAULT_SOCKET, decode_request, encode_answer
from ganeti_ceph import procs
from ganeti_ceph.errors import GanetiCephError, run_main
from ganeti_ceph.session import SessionPool

DEFAULT_PIDFILE = "/run/ganeti-ceph/agent.pid"
DEFAULT_LOG = "/var/log/ganeti/ceph-agent.log"
MAX_REQUEST = 1 << 20


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class Handler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        if peer_uid(self.request) not in (0, os.getuid()):
            return  # only root (Ganeti's noded) may drive volumes
        data = b""
        while len(data) < MAX_REQUEST and (chunk := self.request.recv(65536)):
            data += chunk
        try:
            action, env = decode_request(data)
        except ValueError:
            return
        out = self.server.run(action, env)
        self.request.sendall(encode_answer(out.code, out.stdout, out.stderr))


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.pool = SessionPool()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        old = os.umask(0o077)
        try:
            super().__init__(path, Handler)
        finally:
            os.umask(old)

    def run(self, action: str, env: dict[str, str]) -> provider.Outcome:
        """Run one call in a worker, bounded by the config's timeouts.action."""
        result: list[provider.Outcome] = []
        limit = provider.action_timeout(env)
        worker = threading.Thread(target=lambda: result.append(provider.execute(action, env, self.pool)),
                                  daemon=True)
        worker.start()
        worker.join(limit)
        if result:
            return result[0]
        return provider.Outcome(4, "", f"rbd {action}: did not finish within {limit:.0f} s (timeouts.action)\n")


def serve(path: str, pidfile: str) -> int:
    server = Server(path)
    try:
        procs.serve_until_signalled(server, pidfile, f"ganeti-ceph-agent: serving {path} (pid {os.getpid()})")
    finally:
        server.pool.close_all()
        for leftover in (path, pidfile):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return 0


def running_pid(pidfile: str) -> int | None:
    return procs.pid_from_file(pidfile, "extstorage.agent")


def start(path: str, pidfile: str, log: str) -> int:
    pid = running_pid(pidfile)
    if pid:
        print(f"ganeti-ceph-agent: already running (pid {pid})", file=sys.stderr)
        return 0
    os.makedirs(os.path.dirname(pidfile), mode=0o700, exist_ok=True)
    argv = [sys.executable, "-I", "-m", "extstorage.agent", "run", "--socket", path, "--pidfile", pidfile]
    if not procs.spawn(argv, log, lambda _: bool(running_pid(pidfile)) and os.path.exists(path)):
        raise GanetiCephError(f"ganeti-ceph-agent did not start within 10 s; see {log}")
    return 0


def stop_agent(pidfile: str) -> int:
    procs.terminate(running_pid(pidfile))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganeti-ceph-agent", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop", "status", "run"))
    parser.add_argument("--socket", default=DEFAULT_SOCKET)
    parser.add_argument("--pidfile", default=DEFAULT_PIDFILE)
    parser.add_argument("--log", default=DEFAULT_LOG)
    args = parser.parse_args(argv)
    if args.action == "run":
        return serve(args.socket, args.pidfile)
    if args.action == "start":
        return start(args.socket, args.pidfile, args.log)
    if args.action == "stop":
        return stop_agent(args.pidfile)
    pid = running_pid(args.pidfile)
    print(f"ganeti-ceph-agent: {'running, pid ' + str(pid) if pid else 'not running'}")
    return 0 if pid else 1


def entry() -> None:
    run_main("ganeti-ceph-agent", main)


if __name__ == "__main__":
    entry()
