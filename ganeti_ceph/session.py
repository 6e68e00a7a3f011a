"""The one Ceph session: a librados connection bounded by timeouts.

Ganeti runs providers and hooks with no timeout, so a hung Ceph call would
block its whole job queue. Every connect, mon command and OSD operation made
through a Session is bounded by the config's timeouts, and every librados
error leaves here as a GanetiCephError (see errors.ceph_errors).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ganeti_ceph.config import Config
from ganeti_ceph.errors import CephError, CephUnavailable, ceph_errors, from_errno


def _secs(value: float) -> int:
    return max(1, math.ceil(value))


def rados_options(cfg: Config) -> dict[str, str]:
    """Client options: timeouts, keyring, and no log files or stderr noise."""
    t = cfg.timeouts
    return {
        "keyring": cfg.keyring,
        # Ceph takes whole seconds here ("secs" options refuse "2.5").
        "client_mount_timeout": str(_secs(t.connect)),
        "rados_mon_op_timeout": str(_secs(t.mon_op)),
        "rados_osd_op_timeout": str(_secs(t.osd_op)),
        "log_to_file": "false",
        "log_file": "",
        "log_to_stderr": "false",
        "err_to_stderr": "false",
        # Breaking a stale lock must not blocklist anyone behind our back:
        # fencing is an explicit, separate step (see ganeti_ceph/rbd/locks.py).
        "rbd_blocklist_on_break_lock": "false",
    }


class Session:
    """A connection to one cluster as one client; use as a context manager.

    Construction does nothing: the connection is made by `connect` (or
    `with`), so building a Session is free and safe anywhere.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._cluster: Any = None

    def __enter__(self) -> Session:
        if self._cluster is None:  # already connected: just scope it
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def errors(self, what: str) -> Any:
        """Context manager mapping librados errors for this cluster."""
        return ceph_errors(self.cfg.cluster, what)

    def handle(self) -> Any:
        """A librados handle with our options set, not yet connected (no cluster needed)."""
        import rados  # Debian's python3-rados; imported late so pure code runs without it

        with self.errors("configure the client"):
            return rados.Rados(conffile=self.cfg.conf, rados_id=self.cfg.client_id, conf=rados_options(self.cfg))

    def connect(self) -> None:
        with self.errors("connect"):
            cluster = self.handle()
            try:
                cluster.connect(timeout=_secs(self.cfg.timeouts.connect))
            except Exception:
                cluster.shutdown()  # else its threads outlive every failed connect
                raise
        self._cluster = cluster

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None

    @property
    def rados(self) -> Any:
        if self._cluster is None:
            raise CephError(f"cluster {self.cfg.cluster}: session used before connect")
        return self._cluster

    def mon_command(self, prefix: str, inbuf: bytes = b"", **args: Any) -> Any:
        """Run a mon command; return its parsed JSON output (or None if empty)."""
        return self._command(self.rados.mon_command, prefix, inbuf, args)

    def mgr_command(self, prefix: str, **args: Any) -> Any:
        """Run a mgr command (e.g. `osd ok-to-stop`); like mon_command."""
        return self._command(self.rados.mgr_command, prefix, b"", args)

    def _command(self, send: Any, prefix: str, inbuf: bytes, args: dict[str, Any]) -> Any:
        cmd = {"prefix": prefix, "format": "json", **args}
        with self.errors(prefix):
            ret, out, outs = send(json.dumps(cmd), inbuf, timeout=_secs(self.cfg.timeouts.mon_op))
        if ret != 0:
            raise from_errno(self.cfg.cluster, prefix, -ret, outs.strip() or f"error {ret}")
        # Some commands print several JSON documents (pacific's "osd blocklist
        # ls" gives "[][]"): the first one is the answer.
        return json.JSONDecoder().raw_decode(out.decode())[0] if out.strip() else None

    @contextmanager
    def ioctx(self, pool: str | None = None) -> Iterator[Any]:
        """An IoCtx on `pool` (default: the config's pool), closed on exit; `pool/namespace` (a
        catalogue backend's location) opens the pool with that RBD namespace set."""
        name = pool or self.cfg.pool
        pool_name, _, namespace = name.partition("/")
        with self.errors(f"open pool {name}"):
            ctx = self.rados.open_ioctx(pool_name)
            if namespace:
                ctx.set_namespace(namespace)
        try:
            yield ctx
        finally:
            ctx.close()

    def require_image(self, pool: str, image: str) -> None:
        """Fail with NotFound unless the (format 2) image exists: one OSD stat, no open."""
        with self.ioctx(pool) as ctx, self.errors(f"find image {pool}/{image}"):
            ctx.stat(f"rbd_id.{image}")

    def fsid(self) -> str:
        with self.errors("get fsid"):
            return str(self.rados.get_fsid())



@contextmanager
def one_shot(cfg: Config) -> Iterator[Session]:
    """A session for one call: connect, use, shut down."""
    with Session(cfg) as session:
        yield session


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


class SessionPool:
    """Connected sessions kept across calls (the agent), one per config.

    The key includes the conf and keyring files' mtimes, so a rewritten conf
    or a rotated key gets a fresh connection. A session that failed to reach
    the cluster is dropped and rebuilt on next use. Replaced sessions are
    only shut down at close_all: another thread may still be using them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[tuple, Session] = {}
        self._retired: list[Session] = []

    @contextmanager
    def __call__(self, cfg: Config) -> Iterator[Session]:
        key = (cfg, _mtime(cfg.conf), _mtime(cfg.keyring))
        with self._lock:
            session = self._sessions.get(key)
        if session is None:
            fresh = Session(cfg)
            fresh.connect()  # outside the lock: it may take up to timeouts.connect
            with self._lock:
                session = self._sessions.setdefault(key, fresh)
                for old in [k for k in self._sessions if k[0] == cfg and k != key]:
                    self._retired.append(self._sessions.pop(old))
            if session is not fresh:
                fresh.close()
        try:
            yield session
        except CephUnavailable:
            with self._lock:
                if self._sessions.get(key) is session:
                    self._retired.append(self._sessions.pop(key))
            raise

    def close_all(self) -> None:
        with self._lock:
            sessions = [*self._sessions.values(), *self._retired]
            self._sessions.clear()
            self._retired.clear()
        for session in sessions:
            session.close()
