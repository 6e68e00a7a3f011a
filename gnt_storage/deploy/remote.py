"""SSH to Ganeti nodes with paramiko, the way Ganeti itself does.

Ganeti gives root on the master a key (/root/.ssh/id_<type>) that every node
accepts, and every node the cluster's one host key, recorded in
/var/lib/ganeti/known_hosts under the cluster name (Ganeti's ssh runs with
HostKeyAlias=<cluster name>). We check the node's key against exactly that
entry and never accept an unknown key. Constructing a Node does no I/O.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from ganeti_ceph.errors import GanetiCephError, SshError
from ganeti_ceph.ganeti import ssconf

KNOWN_HOSTS = os.path.join(ssconf.LIB_DIR, "known_hosts")
KEY_FILES = ("/root/.ssh/id_rsa", "/root/.ssh/id_ecdsa", "/root/.ssh/id_ed25519", "/root/.ssh/id_dsa")


class HostKeyMismatch(SshError):
    """The node's SSH host key is not the cluster's (bad input, not a network fault)."""

    exit_code = 2


@dataclass(frozen=True)
class SshSettings:
    """How to reach nodes: the cluster name as host key alias, Ganeti's files."""

    alias: str
    known_hosts: str = KNOWN_HOSTS
    key_files: tuple[str, ...] = KEY_FILES
    port: int = 22
    timeout: float = 10.0


def _quiet_paramiko() -> None:
    """paramiko logs a traceback for every refused peer; our one line says it all."""
    log = logging.getLogger("paramiko")
    log.addHandler(logging.NullHandler())
    log.propagate = False


def load_host_keys(settings: SshSettings) -> Any:
    import paramiko

    _quiet_paramiko()

    keys = paramiko.HostKeys()
    try:
        keys.load(settings.known_hosts)
    except OSError as exc:
        raise GanetiCephError(f"cannot read Ganeti's known hosts {settings.known_hosts} ({exc.strerror}); "
                              "run this on the Ganeti master") from None
    if keys.lookup(settings.alias) is None:
        raise GanetiCephError(f"{settings.known_hosts} has no host key for {settings.alias}; "
                              "run gnt-cluster renew-crypto --new-ssh-keys or check the cluster name")
    return keys


def load_client_key(settings: SshSettings) -> Any:
    import paramiko

    for path in settings.key_files:
        if os.path.exists(path):
            kind = {"rsa": paramiko.RSAKey, "ecdsa": paramiko.ECDSAKey, "ed25519": paramiko.Ed25519Key,
                    "dsa": paramiko.DSSKey}[path.rsplit("_", 1)[1]]
            try:
                return kind.from_private_key_file(path)
            except (OSError, paramiko.SSHException) as exc:
                raise GanetiCephError(f"cannot load the SSH key {path}: {exc}") from None
    raise GanetiCephError(f"no SSH key for root ({', '.join(settings.key_files)}); run this on the Ganeti master")


class Node:
    """One SSH connection to a node; `run` executes a command as root there."""

    def __init__(self, name: str, addr: str, settings: SshSettings) -> None:
        self.name = name
        self.addr = addr
        self.settings = settings
        self._transport: Any = None

    @property
    def short(self) -> str:
        return self.name.split(".")[0]

    def connect(self, host_keys: Any, client_key: Any) -> None:
        """Connect, verify the host key against the cluster's entry, authenticate."""
        import paramiko

        s = self.settings
        try:
            sock = socket.create_connection((self.addr, s.port), timeout=s.timeout)
        except OSError as exc:
            raise SshError(f"node {self.name} ({self.addr}) is unreachable over SSH ({exc.strerror or exc}); "
                                  f"bring it back or take it offline: gnt-node modify --offline yes {self.name}"
                                  ) from None
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = transport.auth_timeout = s.timeout
            want = host_keys.lookup(s.alias) or {}
            # Ask for the key types the cluster recorded (sshd may prefer another one).
            algos = [a for t in want for a in (("rsa-sha2-512", "rsa-sha2-256", t) if t == "ssh-rsa" else (t,))]
            transport.get_security_options().key_types = algos
            transport.start_client(timeout=s.timeout)
            got = transport.get_remote_server_key()
            if want.get(got.get_name()) != got:
                raise HostKeyMismatch(
                    f"node {self.name} ({self.addr}) offered an SSH host key ({got.get_name()} "
                    f"{got.get_fingerprint().hex()}) that is not the cluster's in {s.known_hosts}; "
                    "refusing to connect (check the node, or gnt-node add --readd it)")
            transport.auth_publickey("root", client_key)
        except HostKeyMismatch:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise SshError(f"node {self.name} ({self.addr}): SSH failed ({exc})") from None
        self._transport = transport

    def run(self, argv: str, stdin: bytes = b"", timeout: float = 300.0) -> tuple[int, bytes, bytes]:
        """Run a shell command line; (exit code, stdout, stderr), bounded by `timeout`."""
        if self._transport is None:
            raise GanetiCephError(f"node {self.name}: not connected")
        chan = self._transport.open_session(timeout=self.settings.timeout)
        try:
            chan.settimeout(timeout)
            chan.exec_command(argv)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    raise SshError(f"node {self.name}: {argv.split()[0]} did not finish within {timeout:.0f} s")
                chan.status_event.wait(0.02)
            return chan.recv_exit_status(), bytes(out), bytes(err)
        except TimeoutError:
            raise SshError(f"node {self.name}: no answer within {timeout:.0f} s") from None
        finally:
            chan.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
