"""`ganeti-ceph-mond`: mond's HTTP API for the `ceph` collector, and /metrics.

    ganeti-ceph-mond start|stop|status|run [--bind ADDR] [--port PORT] [--interval S] [--config PATH]
                                           [--max-connections N] [--idle-timeout S]

Ganeti's mond cannot load external collectors, so this small daemon serves
the same API for ours on its own port (mond uses 1815): `/` -> [1],
`/1/list/collectors`, `/1/report/all`, `/1/report/storage/ceph`, plus the
same facts as Prometheus text at `/metrics`. A background thread refreshes
the report every --interval seconds by asking the collector process, a
child that holds the one librados connection (worker.py): a crash, abort or
hang of librados ends only that child, whose refresh is then a code-2
report saying so, and a new child takes over. Requests only read the latest
report, so they cost the same whatever the cluster size. GET only; binds
the node's primary IP (from ssconf) or 127.0.0.1, never all addresses unless
told. At most --max-connections connections are held, each closed after
--idle-timeout seconds without a request: a new connection past the limit
closes the oldest one still waiting for its request, so idle or slow
clients cannot lock out a scrape.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from data_collector import CATEGORY, KIND, NAME, gather, metrics, worker
from data_collector.cli import unknown_report
from ganeti_ceph import config, procs
from ganeti_ceph.config import Config
from ganeti_ceph.errors import ArgumentParser, GanetiCephError, UsageError, run_main
from ganeti_ceph.ganeti import ssconf

PROG = "ganeti-ceph-mond"
DEFAULT_PORT = 1816
DEFAULT_PIDFILE = "/run/ganeti-ceph/mond.pid"
DEFAULT_LOG = "/var/log/ganeti/ceph/mond.log"  # beside the unit's, out of Ganeti's logrotate rule
SSCONF = ssconf.LIB_DIR
JSON = "application/json"
MAX_CONNECTIONS = 64  # far below a default fd limit (1024), with room for librados' sockets
IDLE_TIMEOUT = 10.0  # Prometheus' default scrape timeout


def default_bind(ssconf_dir: str = SSCONF, names: set[str] | None = None) -> str:
    """This node's primary IP if ssconf lists it (a Ganeti node), else 127.0.0.1."""
    host = socket.gethostname()
    names = names or {host, host.split(".")[0], socket.getfqdn()}
    for name, ip in ssconf.pairs(ssconf.lines("node_primary_ips", ssconf_dir)):
        if name in names or name.split(".")[0] in names:
            return ip
    return "127.0.0.1"


def pause(interval: float, took: float) -> float:
    """Seconds until the next refresh: the rest of the interval, or a whole one after a refresh that took
    longer (one that waited out a hung collector process), so that its report is served for an interval
    too and a struggling cluster is not asked again at once."""
    return interval - took if took < interval else interval


class Reports:
    """The latest report, refreshed by one background thread asking the collector process (worker.py)."""

    def __init__(self, cfg: Config, interval: float) -> None:
        self.cfg = cfg
        self.collector = worker.Supervisor(cfg)
        self.interval = interval
        self._lock = threading.Lock()
        self._report: dict[str, Any] = unknown_report("no report yet: the first refresh is running", cfg.cluster)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="refresh", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        """Each refresh is bounded (the collector process is killed past its bound), so no report goes stale."""
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    rep = self.collector.report()
                except Exception as exc:  # a bug must not stop the refreshes: say so, log it, go on
                    traceback.print_exc(file=sys.stderr)
                    rep = unknown_report(f"collector error: {exc!r}", self.cfg.cluster)
                with self._lock:
                    self._report = rep
                self._stop.wait(pause(self.interval, time.monotonic() - started))
        finally:
            self.collector.close()

    def latest(self) -> dict[str, Any]:
        with self._lock:
            return self._report

    def stop(self) -> None:
        """Ends the collector process too: gracefully if idle, else killed (an ask under way then ends at once)."""
        self._stop.set()
        self._thread.join(timeout=worker.CLOSE_S + 1.0)
        if self._thread.is_alive():
            self.collector.kill()
            self._thread.join(timeout=procs.REAP_S)


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "ganeti-ceph-mond"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # StreamRequestHandler applies it to the socket
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape every few seconds would only fill the log

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # any method but GET: read-only
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self.close_connection = True  # a request body, if any, is never read
        self._send(405, JSON, json.dumps({"error": "method not allowed: read-only, GET only"}),
                   {"Allow": "GET", "Connection": "close"})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        rep = self.server.reports.latest()
        if path == "/":
            self._send(200, JSON, "[1]")
        elif path == "/1/list/collectors":
            self._send(200, JSON, json.dumps([[NAME, CATEGORY, KIND]]))
        elif path == "/1/report/all":
            self._send(200, JSON, json.dumps([rep]))
        elif path == f"/1/report/{CATEGORY}/{NAME}":
            self._send(200, JSON, json.dumps(rep))
        elif path == "/metrics":
            self._send(200, metrics.CONTENT_TYPE, metrics.render(rep))
        else:
            self._send(404, JSON, json.dumps({"error": f"not found: {path}"}))

    def _send(self, code: int, ctype: str, body: str, extra: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.server.busy(self.connection)
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)  # bounded by the socket timeout (idle_timeout)
        finally:
            self.server.idle(self.connection)


class Server(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` of them, each bounded by `idle_timeout`."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], reports: Reports, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.reports = reports
        self.max_connections, self.idle_timeout = max_connections, idle_timeout
        # Open connections, oldest first; True while a response is being written to it.
        self._conns: dict[socket.socket, bool] = {}
        self._conns_lock = threading.Lock()
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Make room past the limit by closing the oldest connection still waiting for its request;
        if every one is busy writing (each bounded by idle_timeout), refuse the new one."""
        with self._conns_lock:
            if len(self._conns) >= self.max_connections:
                victim = next((c for c, busy in self._conns.items() if not busy), None)
                if victim is None:
                    self.shutdown_request(request)
                    return
                del self._conns[victim]
                with contextlib.suppress(OSError):
                    victim.shutdown(socket.SHUT_RDWR)  # its thread sees EOF and ends
            self._conns[request] = False
        super().process_request(request, client_address)

    def busy(self, conn: socket.socket) -> None:
        """`conn` is being answered: not to be shed until its next request."""
        with self._conns_lock:
            if conn in self._conns:
                self._conns[conn] = True

    def idle(self, conn: socket.socket) -> None:
        with self._conns_lock:
            if conn in self._conns:
                self._conns[conn] = False

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about a dropped client (a timeout, a reset, a shed connection); a bug keeps its traceback."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            traceback.print_exc(file=sys.stderr)


def serve(cfg: Config, bind: str, port: int, interval: float, pidfile: str,
          max_connections: int = MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT, log: str | None = None) -> int:
    reports = Reports(cfg, interval)
    try:
        server = Server((bind, port), reports, max_connections, idle_timeout)
    except OSError as exc:
        raise UsageError(f"cannot listen on {bind}:{port} ({exc.strerror}); choose --bind/--port") from None
    reports.start()
    os.makedirs(os.path.dirname(pidfile), mode=0o755, exist_ok=True)
    try:
        procs.serve_until_signalled(server, PROG, pidfile, f"serving http://{bind}:{port}/ (pid {os.getpid()})", log)
    finally:
        server.server_close()
        reports.stop()
        if running_pid(pidfile) in (None, os.getpid()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pidfile)
    return 0


# -- start, stop, status: by pid file, with the command line checked (like ganeti-ceph-agent) --

def running_pid(pidfile: str) -> int | None:
    return procs.pid_from_file(pidfile, "data_collector.daemon")


def start(args: argparse.Namespace) -> int:
    pid = running_pid(args.pidfile)
    if pid:
        print(f"{PROG}: already running (pid {pid})", file=sys.stderr)
        return 0
    log = args.log or DEFAULT_LOG
    argv = [sys.executable, "-I", "-m", "data_collector.daemon", "run", "--bind", args.bind, "--port",
            str(args.port), "--interval", str(args.interval), "--timeout", str(args.timeout), "--pidfile", args.pidfile,
            "--max-connections", str(args.max_connections), "--idle-timeout", str(args.idle_timeout),
            "--config", os.path.abspath(config.config_path() if args.config is None else args.config),
            "--log", log]
    if not procs.spawn(argv, log, lambda child: running_pid(args.pidfile) == child.pid):
        raise GanetiCephError(f"{PROG} did not start within 10 s; see {log}")
    return 0


def stop_daemon(pidfile: str) -> int:
    procs.terminate(running_pid(pidfile))
    return 0


def main(argv: list[str] | None = None) -> int:
    procs.defer_hup()  # a SIGHUP while it starts must not end it
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop", "status", "run", "reload"))
    parser.add_argument("--bind", help="address to listen on (default: the node's primary IP, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes (default 5)")
    parser.add_argument("--timeout", type=float, default=5.0, help="cap on connect and each mon command (default 5)")
    parser.add_argument("--config", help=f"ganeti-ceph config (default ${config.ENV_VAR} or {config.DEFAULT_PATH})")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                        help=f"connections held; past it the oldest idle one closes (default {MAX_CONNECTIONS})")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT,
                        help=f"seconds a connection may wait for or send its request (default {IDLE_TIMEOUT:g})")
    parser.add_argument("--pidfile", default=DEFAULT_PIDFILE)
    parser.add_argument("--log", help=f"append output to this file, reopened on SIGHUP (default with start: "
                                      f"{DEFAULT_LOG}; with run: stderr)")
    args = parser.parse_args(argv)
    args.bind = args.bind or default_bind()
    for name in ("interval", "idle_timeout", "max_connections"):
        value = getattr(args, name)
        if not (0 < value < float("inf")):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number, not {value}")
    if args.action == "run":
        return serve(gather.with_timeout(config.load(args.config), args.timeout), args.bind, args.port,
                     args.interval, args.pidfile, args.max_connections, args.idle_timeout, args.log)
    if args.action == "start":
        return start(args)
    if args.action == "stop":
        return stop_daemon(args.pidfile)
    if args.action == "reload":
        return procs.reload(PROG, running_pid(args.pidfile))
    return procs.status(PROG, running_pid(args.pidfile))


def entry() -> None:
    run_main(PROG, main)


if __name__ == "__main__":
    entry()
