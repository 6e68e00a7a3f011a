"""The provider executable's fast path: hand the call to the node's agent.

This module imports nothing but `_socket`, `os`, `sys` and `time`: a
provider call then costs a bare Python start plus one local round trip. The
agent (extstorage/agent.py) holds connected librados sessions and runs the
same handlers. When no agent is there to take the call (no socket, nobody
listening), the call runs in this process instead (extstorage.provider): the
agent makes calls fast, never possible. Once the call may have reached the
agent, it is never run again here: a lost agent is a failure, in one line.

Wire: every message is a frame, a 4-byte big-endian length and at most
MAX_FRAME bytes. Request `action NUL key=value NUL ...` (environment strings
cannot hold NUL); the agent answers `started` with the call's bound in
seconds, then `code NUL stdout NUL stderr`. Every receive has a deadline.
"""

from __future__ import annotations

import _socket
import os
import sys
import time

DEFAULT_SOCKET = "/run/ganeti-ceph/agent.sock"
SOCKET_ENV = "GANETI_CEPH_AGENT_SOCKET"
# Only these reach the agent: Ganeti's call, and which config to use.
PASSED = ("VOL_", "EXTP_")
PASSED_NAMES = ("GANETI_CEPH_CONFIG",)
HEADER = 4
MAX_FRAME = 1 << 20
HANDSHAKE_S = 10.0  # connect, send, and the agent's `started` frame
GRACE_S = 30.0  # past the call's bound: the agent kills its worker, reaps it and answers
EXIT_LOST = 4  # as CephUnavailable: the call did not complete


class WireError(Exception):
    """A frame that is too big, cut short, or late."""


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


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise WireError(f"message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte limit")
    return len(payload).to_bytes(HEADER, "big") + payload


def recv_frame(sock: _socket.socket, deadline: float | None) -> bytes:
    """One frame from `sock`, all of it before `deadline` (time.monotonic; None: no limit)."""
    size = int.from_bytes(_recv_exact(sock, HEADER, deadline), "big")
    if size > MAX_FRAME:
        raise WireError(f"a message of {size} bytes announced, over the {MAX_FRAME}-byte limit")
    return _recv_exact(sock, size, deadline)


def _recv_exact(sock: _socket.socket, size: int, deadline: float | None) -> bytes:
    data = b""
    while len(data) < size:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise WireError("no complete answer in time")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(size - len(data), 65536))
        except TimeoutError:
            raise WireError("no complete answer in time") from None
        if not chunk:
            raise WireError("the connection closed before a complete message")
        data += chunk
    return data


def ask_agent(path: str, action: str, env: dict[str, str]) -> tuple[int, str, str] | None:
    """The agent's answer, or None when no agent took the call (connect failed:
    it provably never saw it). Raises WireError or OSError once it may have."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(HANDSHAKE_S)
        try:
            sock.connect(path)
        except OSError:
            return None
        sock.sendall(frame(encode_request(action, env)))
        started = recv_frame(sock, time.monotonic() + HANDSHAKE_S).decode()
        bound = float(started.removeprefix("started "))
        return decode_answer(recv_frame(sock, time.monotonic() + bound + GRACE_S))
    finally:
        sock.close()


def main() -> None:
    action = os.path.basename(sys.argv[0])
    env = dict(os.environ)
    try:
        answer = ask_agent(env.get(SOCKET_ENV) or DEFAULT_SOCKET, action, env)
    except (OSError, ValueError, WireError) as exc:  # the agent may have started it: never run it twice
        sys.stderr.write(f"rbd {action}: the ganeti-ceph agent took the call but gave no answer ({exc}); "
                         "it may or may not have been done: check the volume, then retry\n")
        sys.exit(EXIT_LOST)
    if answer is None:
        import gc

        # Importing the service makes only objects that live as long as the process: the cyclic
        # collector would scan them some forty times for nothing (milliseconds of every call).
        gc.disable()
        from extstorage.provider import entry

        gc.enable()
        entry()
        return
    code, stdout, stderr = answer
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
