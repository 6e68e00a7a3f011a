"""The provider executable's fast path: hand the call to the node's agent.

This module imports only the standard library's socket/json/os/sys, so a
provider call costs a bare Python start plus one local round trip. The
agent (extstorage/agent.py) holds a connected librados session and runs the
same handlers. When no agent answers, the call runs in this process
instead (extstorage.provider): the agent makes calls fast, never possible.
"""

from __future__ import annotations

import json
import os
import socket
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


def ask_agent(path: str, action: str, env: dict[str, str]) -> dict | None:
    """The agent's answer, or None when there is no agent to ask."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(BACKSTOP)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None
        sock.sendall(json.dumps({"action": action, "env": request_env(env)}).encode())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    finally:
        sock.close()
    return json.loads(b"".join(chunks)) if chunks else None


def main() -> None:
    action = os.path.basename(sys.argv[0])
    env = dict(os.environ)
    try:
        answer = ask_agent(env.get(SOCKET_ENV) or DEFAULT_SOCKET, action, env)
    except (OSError, ValueError) as exc:  # agent died mid-call: say so, do not retry blindly
        print(f"rbd {action}: the ganeti-ceph agent failed during the call ({exc}); retry", file=sys.stderr)
        sys.exit(4)
    if answer is None:
        from extstorage.provider import entry

        entry()
        return
    sys.stdout.write(answer["stdout"])
    sys.stderr.write(answer["stderr"])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(int(answer["code"]))
