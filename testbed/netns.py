"""Namespaces and links for test-bed nodes, with nothing left behind.

A node is a tiny init process ("holder") that unshare(1) starts as PID 1 of
fresh network, mount, UTS, IPC and PID namespaces. Everything run in the node
is entered with nsenter(1) into all five, so it lives in the node's PID
namespace: killing the holder makes the kernel kill every process of the
node (daemons, sshd, rbd-fuse, QEMU), and with the last process the mount
and network namespaces go, taking their mounts and interfaces along. No
namespace is bind-mounted anywhere, so nothing can outlive the node.

Holders carry a marker and their node directory in argv, so `down` finds
them from /proc alone: no state file, and it works from another process
than `up` or after `up` was killed half-way.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass

from ganeti_ceph import procs

MARKER = "ganeti-testbed-holder"
NS_FLAGS = ("--mount", "--uts", "--ipc", "--net", "--pid")
# PID 1 of the node: reaps orphans (daemons double-fork into it) and sleeps.
HOLDER = (
    "import os, signal\n"
    "signal.signal(signal.SIGTERM, lambda *_: os._exit(0))\n"
    "while True:\n"
    "    try:\n"
    "        os.waitpid(-1, 0)\n"
    "    except ChildProcessError:\n"
    "        signal.sigtimedwait([signal.SIGCHLD], 1.0)\n"
)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NetnsError(RuntimeError):
    """A namespace or link operation failed."""


def node_env() -> dict[str, str]:
    """What a root login on a plain Debian host has: no pyenv, venv or CEPH_ARGS from our caller,
    since Ganeti daemons started in the node pass their environment on to providers."""
    return {"PATH": PATH, "HOME": "/root", "LC_ALL": "C", "LANG": "C", "USER": "root", "LOGNAME": "root"}


def sh(argv: list[str], check: bool = True, timeout: float = 30, input: str | None = None,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a host command; failures raise NetnsError with its stderr."""
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, check=False,
                         stdin=None if input is not None else subprocess.DEVNULL, env=env or node_env())
    if check and res.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()}")
    return res


# -- holders -------------------------------------------------------------------

@dataclass(frozen=True)
class Holder:
    """One node's namespaces: `pid` is the holder (PID 1 inside) as seen from the host."""

    pid: int
    wrapper: int

    def enter(self) -> list[str]:
        """argv prefix that runs a command inside the node (cwd and root: the node's /)."""
        return ["nsenter", "--target", str(self.pid), *NS_FLAGS, "--"]


def spawn(tag: str, log_path: str, wait: float = 10.0) -> Holder:
    """Start a holder for the node whose directory is `tag`; detached, so it outlives this process."""
    argv = ["unshare", *NS_FLAGS, "--fork", "--mount-proc", "--propagation", "private",
            "/usr/bin/python3", "-I", "-c", HOLDER, MARKER, tag]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                env=node_env(), cwd="/")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for child in _children(proc.pid):
            if _is_holder(child, tag):
                return Holder(child, proc.pid)
        if proc.poll() is not None:
            raise NetnsError(f"unshare exited with {proc.returncode}; see {log_path}")
        time.sleep(0.005)
    kill_tree(proc.pid)
    raise NetnsError(f"node holder for {tag} did not start within {wait:.0f} s")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _is_holder(pid: int, tag: str) -> bool:
    """A live python holder for `tag` that is PID 1 of its own PID namespace."""
    argv = procs.cmdline(pid)
    if MARKER not in argv or tag not in argv or os.path.basename(argv[0]).startswith("unshare"):
        return False
    try:
        with open(f"/proc/{pid}/status") as fh:
            nspid = next(line.split()[1:] for line in fh if line.startswith("NSpid:"))
    except (OSError, StopIteration):
        return False
    return nspid[-1:] == ["1"] and procs.alive(pid)


def find(tag: str) -> list[Holder]:
    """Every live holder of node `tag` (normally one), wherever it came from."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _is_holder(int(entry), tag):
            found.append(Holder(int(entry), _parent(int(entry))))
    return found


def all_tags() -> list[str]:
    """The node directories of every live holder on this host, whichever test bed they belong to."""
    tags = []
    for entry in os.listdir("/proc"):
        argv = procs.cmdline(entry) if entry.isdigit() else []
        if MARKER in argv and argv.index(MARKER) + 1 < len(argv) and _is_holder(int(entry), argv[-1]):
            tags.append(argv[argv.index(MARKER) + 1])
    return tags


def _parent(pid: int) -> int:
    s = _stat(pid)
    return int(s[1]) if s else 0


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pidns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def members(ns: str) -> list[int]:
    """Live processes in PID namespace `ns` (as `pid:[inode]`)."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and pidns(int(p)) == ns and procs.alive(int(p))]


def kill(holder: Holder, wait: float = 10.0) -> None:
    """Kill the node: SIGKILL to PID 1 of a PID namespace kills all of it; wait until it is empty."""
    ns = pidns(holder.pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(holder.pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if (ns is None or not members(ns)) and not procs.alive(holder.pid):
            break
        time.sleep(0.01)
    else:
        raise NetnsError(f"node holder {holder.pid} still has processes after {wait:.0f} s")
    _reap(holder.wrapper)
    # Not our child (up ran in another process): init collects the exited unshare; give it a moment.
    deadline = time.monotonic() + 5
    while procs.state(holder.wrapper) == "Z" and _parent(holder.wrapper) == 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def kill_tree(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect unshare if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


# -- links ---------------------------------------------------------------------

def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def bridge_up(name: str, cidr: str) -> bool:
    """Create a bridge with `cidr` in the root namespace; False if it was already there as asked."""
    if link_exists(name):
        addrs = sh(["ip", "-o", "-4", "addr", "show", "dev", name]).stdout
        if f" {cidr} " not in addrs or not os.path.isdir(f"/sys/class/net/{name}/bridge"):
            raise NetnsError(f"interface {name} exists but is not our bridge with {cidr}; remove it first")
        return False
    sh(["ip", "link", "add", name, "type", "bridge"])
    try:
        sh(["ip", "addr", "add", cidr, "dev", name])
        sh(["ip", "link", "set", name, "up"])
    except NetnsError:
        link_delete(name)
        raise
    return True


def veth_into(host_end: str, bridge: str, holder: Holder, node_end: str) -> None:
    """A veth from `bridge` in the root namespace to `node_end` inside the node."""
    if link_exists(host_end):
        link_delete(host_end)
    sh(["ip", "link", "add", host_end, "type", "veth", "peer", "name", node_end, "netns", str(holder.pid)])
    sh(["ip", "link", "set", host_end, "master", bridge, "up"])


def link_delete(name: str) -> None:
    """Delete a link (a veth takes its peer along); absent is fine."""
    if link_exists(name):
        res = sh(["ip", "link", "del", name], check=False)
        if res.returncode != 0 and link_exists(name):
            raise NetnsError(f"cannot delete {name}: {res.stderr.strip()}")


# -- mounts --------------------------------------------------------------------

def mounts(pid: int) -> list[tuple[str, str, str]]:
    """(mount point, fs type, major:minor) of every mount in the mount namespace of `pid`."""
    out = []
    try:
        with open(f"/proc/{pid}/mountinfo") as fh:
            for line in fh:
                left, right = line.split(" - ", 1)
                fields = left.split()
                point = fields[4].encode().decode("unicode_escape")
                out.append((point, right.split()[0], fields[2]))
    except OSError:
        pass
    return out


SYSTEM_MOUNTS = ("/", "/dev", "/dev/pts", "/dev/shm", "/proc", "/sys")


def foreign_mounts(pid: int) -> list[str]:
    """Mount points in the namespace of `pid` other than the basic system ones (/, /dev, /proc, /sys...)."""
    return [p for p, _, _ in mounts(pid) if p not in SYSTEM_MOUNTS and not p.startswith(("/proc/", "/sys/"))]


def drop_foreign_mounts(holder: Holder, tries: int = 5) -> None:
    """Detach every mount the node's new mount namespace copied from the host, bar the system ones.

    A copy pins what is mounted: another user's rbd-fuse would not exit on
    their unmount (their image stays watched), their loop-mounted file
    systems stay busy, a bind-mounted namespace of theirs stays alive.
    Lazy unmounts here change only the node's view, never the host's.
    """
    for _ in range(tries):  # stacked mounts on one point come off one per round
        points = foreign_mounts(holder.pid)
        if not points:
            return
        deepest_first = sorted(set(points), key=len, reverse=True)
        script = "".join(f"umount -l {shlex.quote(p)} 2>/dev/null || true\n" for p in deepest_first)
        sh([*holder.enter(), "sh", "-c", script], check=False)
    raise NetnsError(f"cannot detach the host's mounts from node {holder.pid}: {', '.join(foreign_mounts(holder.pid))}")
