"""The provider executable's fast path: hand the call to the node's agent.

This module imports nothing but `_socket`, `os` and `sys`: a provider call
then costs a bare Python start plus one local round trip. The agent
(extstorage/agent.py) holds a connected librados session and runs the same
handlers. When no agent answers, the call runs in this process instead
(extstorage.provider): the agent makes calls fast, never possible.

Wire format, NUL-separated (environment strings cannot hold NUL):
request `action NUL key=value NUL ...`, answer `code NUL stdout NUL stderr`.
"""

from __future__ import annotations

import _socket
import os
import sys

DEFAULT_SOCKET = "/run/ganeti-ceph/agent.sock"
SOCKET_ENV = "GANETI_CEPH_AGENT_SOCKET"
# Only these reach the agent: Ganeti's call, and which config to use.
PASSED = ("VOL_", "EXTP_")
PASSED_NAMES = ("GANETI_CEPH_CONFIG",)
# The agent bounds every call by timeouts.action; this only guards the socket.
BACKSTOP = 900.0


def request_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(PASSED) or k in PASSED_NAMES}


def encode_request(action: str, env: dict[str, str]) -> bytes:
    return "\0".join([action, *(f"{k}={v}" for k, v in request_env(env).items())]).encode()


def decode_request(data: bytes) -> tuple[str, dict[str, str]]:
    action, *pairs = data.decode().split("\0")
    return action, dict(p.split("=", 1) for p in pairs if "=" in p)


def encode_answer(code: int, stdout: str, stderr: str) -> bytes:
    return "\0".join([str(code), stdout.replace("\0", ""), stderr.replace("\0", "")]).encode()


def decode_answer(data: bytes) -> tuple[int, str, str]:
    code, stdout, stderr = data.decode().split("\0", 2)
    return int(code), stdout, stderr


def ask_agent(path: str, action: str, env: dict[str, str]) -> tuple[int, str, str] | None:
    """The agent's answer, or None when there is no agent to ask."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(BACKSTOP)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None
        sock.sendall(encode_request(action, env))
        sock.shutdown(_socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    finally:
        sock.close()
    return decode_answer(b"".join(chunks)) if chunks else None


def main() -> None:
    action = os.path.basename(sys.argv[0])
    env = dict(os.environ)
    try:
        answer = ask_agent(env.get(SOCKET_ENV) or DEFAULT_SOCKET, action, env)
    except (OSError, ValueError) as exc:  # agent died mid-call: say so, do not retry blindly
        sys.stderr.write(f"rbd {action}: the ganeti-ceph agent failed during the call ({exc}); retry\n")
        sys.exit(4)
    if answer is None:
        from extstorage.provider import entry

        entry()
        return
    code, stdout, stderr = answer
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
