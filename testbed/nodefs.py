"""A node's private filesystem view: what it mounts, and the files it starts with.

Each node sees the host's files except where a real host would differ:
/etc and /usr/local/lib are overlays whose upper layer lives in the node's
directory (so /etc/ganeti keeps the package's lib/share links and
`ganeti-ceph-setup install` writes /usr/local/lib/ganeti/extstorage without
touching the host). A node that gets the .deb (`Node.packaged`) also has
overlays over everything dpkg and our maintainer scripts write: /usr (and
with it /lib, a link to usr/lib), /var/lib/dpkg, /var/lib/systemd
(deb-systemd-helper's state), /var/log (dpkg.log) and /var/cache (man-db's
trigger), so the host's / never changes. /var/lib/ganeti, /var/log/ganeti, /root/.ssh and /srv are
bind mounts of the node's directory; /run is a fresh tmpfs and /sys a sysfs
of the node's network namespace. All of it lives in the node's mount
namespace only and vanishes with it; the directory stays for post-mortems.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil

from ganeti_ceph import atomic
from ganeti_ceph import config as gconfig
from testbed import os_noop

RUN_DIR = "/run/ganeti-ceph"
CEPH_ETC = "/etc/ceph"
BINDS = {"var-lib-ganeti": "/var/lib/ganeti", "log": "/var/log/ganeti", "root-ssh": "/root/.ssh", "srv": "/srv",
         # What a Ceph node of its own keeps (init-distributed-storage): data, logs, our state.
         "var-lib-ceph": "/var/lib/ceph", "var-log-ceph": "/var/log/ceph",
         "var-lib-ganeti-ceph": "/var/lib/ganeti-ceph"}
OVERLAYS = {"etc": "/etc", "usr-local-lib": "/usr/local/lib"}
# A packaged node's, in mount order: /usr before /usr/local/lib, so that the latter overlays the former.
PACKAGE_OVERLAYS = {"usr": "/usr", "etc": "/etc", "usr-local-lib": "/usr/local/lib", "var-lib-dpkg": "/var/lib/dpkg",
                    "var-lib-systemd": "/var/lib/systemd", "var-log": "/var/log", "var-cache": "/var/cache"}
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")  # overlay options cannot quote , : or spaces


@dataclasses.dataclass(frozen=True)
class Node:
    """One node: its index, names, address and host-side directory."""

    index: int
    name: str
    addr: str
    dir: str
    packaged: bool = False  # gets the .deb by dpkg (more overlays), not `ganeti-ceph-setup install`

    @property
    def short(self) -> str:
        return self.name.split(".")[0]

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    @property
    def overlays(self) -> dict[str, str]:
        """Upper-dir name -> what it overlays, in mount order."""
        return PACKAGE_OVERLAYS if self.packaged else OVERLAYS


def prepare(node: Node) -> None:
    """A fresh node directory (the previous run's is wiped, logs included)."""
    if not SAFE_PATH.match(node.dir):
        raise ValueError(f"node directory {node.dir!r} may only hold letters, digits and ._/-")
    shutil.rmtree(node.dir, ignore_errors=True)
    for sub in BINDS:
        os.makedirs(node.path(sub), mode=0o755)
    os.chmod(node.path("root-ssh"), 0o700)
    for sub in node.overlays:
        os.makedirs(node.path(f"{sub}.upper"), mode=0o755)
        os.makedirs(node.path(f"{sub}.work"), mode=0o755)


def mount_script(node: Node) -> str:
    """Shell run once inside the node's fresh namespaces to build its view, before anything else runs there."""
    lines = ["set -e",
             "mount -t sysfs sysfs /sys",
             "mount -t tmpfs -o mode=0755,size=64m tmpfs /run",
             "mkdir -m 1777 /run/lock"]
    for sub, target in node.overlays.items():
        lines.append(f"mount -t overlay overlay -o lowerdir={target},upperdir={node.path(sub + '.upper')},"
                     f"workdir={node.path(sub + '.work')} {target}")
    # Mount points may be missing on a fresh host (no /root/.ssh yet, no Ceph dirs).
    lines += [f"mkdir -p {target} && mount --bind {node.path(sub)} {target}" for sub, target in BINDS.items()]
    lines += [f"hostname {node.name}",
              "ip link set lo up",
              # Fresh host keys: the copies in /etc/ssh are the host's own.
              "rm -f /etc/ssh/ssh_host_*",
              "ssh-keygen -A -q >/dev/null"]
    return "\n".join(lines) + "\n"


def hosts_file(nodes: list[Node], cluster_name: str, cluster_ip: str) -> str:
    """Every node and the cluster name; node names must not resolve to loopback for Ganeti."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{cluster_ip}\t{cluster_name} {cluster_name.split('.')[0]}"]
    lines += [f"{n.addr}\t{n.name} {n.short}" for n in nodes]
    return "\n".join(lines) + "\n"


def client_conf(ceph_conf: str) -> str:
    """A node's /etc/ceph/ceph.conf: only what a client needs, taken from the cluster's conf.

    QEMU's userspace rbd and Ganeti 3.1 find monitors and keys only there.
    """
    wanted = {"fsid", "mon_host"}
    found: dict[str, str] = {}
    section = ""
    with open(ceph_conf) as fh:
        for raw in fh:
            line = raw.strip()
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "global" and "=" in line:
                key, value = (s.strip() for s in line.split("=", 1))
                if key.replace(" ", "_") in wanted:
                    found[key.replace(" ", "_")] = value
    missing = wanted - set(found)
    if missing:
        raise ValueError(f"{ceph_conf} has no {', '.join(sorted(missing))} in [global]")
    return ("# Written by testbed: client settings of the test cluster.\n[global]\n"
            f"\tfsid = {found['fsid']}\n\tmon_host = {found['mon_host']}\n\tms_bind_ipv6 = false\n"
            "\tauth_cluster_required = cephx\n\tauth_service_required = cephx\n\tauth_client_required = cephx\n"
            f"[client]\n\tkeyring = {CEPH_ETC}/ceph.$name.keyring\n\tlog_to_file = false\n")


def run_dir(node: Node) -> str:
    """The node's provider run dir, apart from every other node's. Real hosts have a kernel each; here the
    nodes share one, and with it the loop devices, which fuse-loop finds by their backing file's path
    (`<run_dir>/fuse/...`): with one path on every node, a detach on the old primary after a migration took
    the new primary's loop device too."""
    return f"{RUN_DIR}/{node.short}"


def provider_config(ceph_dir: str, node: Node) -> str:
    """/etc/ganeti/ceph.yaml: the caller's client config moved to /etc/ceph, fuse-loop, this node."""
    cfg = gconfig.load(os.path.join(ceph_dir, "ganeti-ceph.yaml"))
    changes = {"conf": f"{CEPH_ETC}/ceph.conf", "keyring": f"{CEPH_ETC}/ceph.client.{cfg.client_id}.keyring",
               "mapper": "fuse-loop", "run_dir": run_dir(node), "node": node.name}
    return gconfig.dump(dataclasses.replace(cfg, **changes))


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    atomic.write(path, text, mode)


def seed(node: Node, nodes: list[Node], ceph_dir: str | None, cluster_name: str, cluster_ip: str) -> None:
    """Files the node starts with, written into its layers before anything is mounted
    (without `ceph_dir`: no Ceph client files at all)."""
    etc = node.path("etc.upper")
    _write(os.path.join(etc, "hosts"), hosts_file(nodes, cluster_name, cluster_ip))
    _write(os.path.join(etc, "ganeti", "file-storage-paths"), "/srv/ganeti/file-storage\n")
    os.makedirs(node.path("srv", "ganeti", "file-storage"), mode=0o750)
    os_noop.install(node.path("srv", "ganeti", "os"))
    if ceph_dir is None:
        return
    _write(os.path.join(etc, "ceph", "ceph.conf"), client_conf(os.path.join(ceph_dir, "ceph.conf")))
    cfg = gconfig.load(os.path.join(ceph_dir, "ganeti-ceph.yaml"))
    with open(cfg.keyring) as fh:
        _write(os.path.join(etc, "ceph", f"ceph.client.{cfg.client_id}.keyring"), fh.read(), 0o600)
    _write(os.path.join(etc, "ganeti", "ceph.yaml"), provider_config(ceph_dir, node), 0o640)
