"""A real N-node Ganeti cluster on this one machine, for end-to-end tests and the demo.

Network plan (nothing is routed outside; eth0 is never touched):

    root namespace:  bridge gcbr0 198.51.100.1/24   <- the caller's Ceph binds here
                       |-- veth gcv0 --- node0: eth0 in bridge br0, 198.51.100.10/24 (+ cluster IP .100)
                       `-- veth gcv1 --- node1: eth0 in bridge br0, 198.51.100.11/24

Each node is a set of namespaces (see testbed.netns) with a private view
of Ganeti's directories (see testbed.nodefs). br0 is on every node, so it
serves as the master netdev (the veth gives it carrier; this kernel has no
dummy interfaces) and as the instance NIC link. Node 0 is the master.

What the nodes run of ours: by default the checkout, as `ganeti-ceph-setup
install` puts it into each node's /usr/local/lib (`make demo`); with
`install="deb:PATH"` the package, installed by dpkg into each node's
overlays (`Testbed.install_deb`; what the pytest session bed does).

Usage from Python: `tb = Testbed(workdir, ceph_dir); tb.network_up()`, then
bring Ceph up on 198.51.100.1, then `tb.up()`, `tb.run(0, [...])`, and
`tb.down()` (idempotent; also after a failed or half-done up).
CLI: `python -m testbed.ganeti up|down|status|shell` (see testbed.cli).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psutil

from ganeti_ceph import procs, runner
from ganeti_ceph.log import progress
from testbed import mappings as fuse_loop
from testbed import netns, nodefs
from testbed.netns import Holder

# Two test beds can run side by side (parallel work) when the second is given
# its own network: e.g. GANETI_TESTBED_NET=203.0.113 GANETI_TESTBED_ID=1.
TESTBED_ID = os.environ.get("GANETI_TESTBED_ID", "0")
BRIDGE = f"gcbr{TESTBED_ID}"
NET_PREFIX = os.environ.get("GANETI_TESTBED_NET", "198.51.100") + "."
HOST_ADDR = NET_PREFIX + "1"
DOMAIN = "gcb.test"
CLUSTER_NAME = f"cluster.{DOMAIN}"
NODE_BRIDGE = "br0"
BIN = os.path.dirname(sys.executable)
SETUP = os.path.join(BIN, "ganeti-ceph-setup")
CHECKOUT, DEB = "checkout", "deb:"
# Where Ganeti finds our provider: `ganeti-ceph-setup install`'s default, or the package's.
PROVIDER = {CHECKOUT: "/usr/local/lib/ganeti/extstorage/rbd", DEB: "/usr/share/ganeti/extstorage/rbd"}
# dpkg in a node: no terminal, keep the bed's /etc/ganeti/ceph.yaml (written before the package's first
# install; dpkg would ask) and take the package's version of any other conffile nobody changed.
DPKG = ("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--force-confold", "--force-confdef")
INIT_FLAGS = (
    "--enabled-hypervisors=fake,kvm", "--enabled-disk-templates=ext,file",
    "-H", "kvm:kernel_path=,initrd_path=,kvm_path=/usr/bin/qemu-system-x86_64,kvm_flag=enabled",
    f"--master-netdev={NODE_BRIDGE}", "--master-netmask=24", f"--nic-parameters=link={NODE_BRIDGE}",
    "--no-etc-hosts",  # every node's /etc/hosts is written by the test bed
    "--file-storage-dir=/srv/ganeti/file-storage",
    # Small test disks and instances must pass the instance policy.
    "--specs-disk-size=min=1,std=256", "--specs-mem-size=min=32,std=128",
)
# This kernel's /proc/diskstats has 20 fields and there is no DRBD: these collectors make mond fail.
COLLECTORS = "--enabled-data-collectors=diskstats=False,drbd=False"
# How long the bridge's removal waits for sockets on its address to close: as long as local-cluster
# gives a SIGKILLed daemon (gnt_storage.deploy.daemons.KILL_WAIT), which is what such a socket usually is.
LISTENER_WAIT_S = 60.0


def _bridge_of(workdir: str) -> str | None:
    """The root bridge a test bed's work dir was brought up with (None: unknown)."""
    try:
        with open(os.path.join(workdir, "bridge")) as fh:
            return fh.read().strip()
    except OSError:
        return None


class TestbedError(RuntimeError):
    """Bringing the test bed up or down failed."""


class Testbed:
    """N Ganeti nodes in namespaces under `workdir`, using the Ceph cluster of `ceph_dir`."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, workdir: str, ceph_dir: str | None, nodes: int = 2, bed_id: str = TESTBED_ID,
                 net: str = NET_PREFIX.rstrip("."), install: str = CHECKOUT) -> None:
        """`bed_id` and `net` (first three octets) let beds run side by side (default: from the environment);
        `install`: "checkout" or "deb:PATH" (a .deb, e.g. of `make deb`), what the nodes run of ours."""
        if not 1 <= nodes <= 80:
            raise ValueError("nodes must be between 1 and 80")
        if install != CHECKOUT and not (install.startswith(DEB) and install.endswith(".deb")):
            raise ValueError(f"install must be {CHECKOUT!r} or 'deb:PATH.deb', not {install!r}")
        self.deb = os.path.abspath(install[len(DEB):]) if install.startswith(DEB) else None
        self.bridge, self.veth_prefix = f"gcbr{bed_id}", f"gcv{bed_id}n"
        self.host_addr, self.cluster_ip = f"{net}.1", f"{net}.100"
        self.workdir = os.path.abspath(workdir)
        # None: the nodes start without any Ceph (init-distributed-storage builds one on them).
        self.ceph_dir = os.path.abspath(ceph_dir) if ceph_dir else None
        self.nodes = [nodefs.Node(i, f"node{i}.{DOMAIN}", f"{net}.{10 + i}", os.path.join(self.workdir, f"node{i}"),
                                  packaged=self.deb is not None) for i in range(nodes)]

    @property
    def provider(self) -> str:
        """The directory of our ExtStorage provider on every node."""
        return PROVIDER[DEB if self.deb else CHECKOUT]

    @property
    def gnt_storage(self) -> str:
        """Our gnt-storage as the nodes run it: the package's (it diverts Ganeti's), or the checkout's."""
        return "/usr/sbin/gnt-storage" if self.deb else os.path.join(BIN, "gnt-storage")

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def addresses(self) -> list[str]:
        return [n.addr for n in self.nodes]

    @property
    def master(self) -> str:
        return self.nodes[0].name

    # -- running things inside nodes -------------------------------------------------
    def holder(self, index: int) -> Holder:
        found = netns.find(self.nodes[index].dir)
        if not found:
            raise TestbedError(f"node {index} ({self.nodes[index].name}) is not running")
        return found[0]

    def enter_argv(self, index: int) -> list[str]:
        """The nsenter prefix that runs a command inside node `index`."""
        return self.holder(index).enter()

    def run(self, index: int, argv: list[str], check: bool = True, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv as root inside node `index` with a plain root environment; output captured."""
        res = subprocess.run([*self.enter_argv(index), *argv], capture_output=True, text=True, timeout=timeout,
                             input=input, stdin=None if input is not None else subprocess.DEVNULL,
                             env=netns.node_env(), check=False)
        if check and res.returncode != 0:
            shown = " ".join(argv) if len(" ".join(argv)) < 200 else " ".join(argv)[:200] + "..."
            raise TestbedError(f"{self.nodes[index].short}: {shown} failed (exit {res.returncode}):\n"
                               f"{res.stdout}{res.stderr}".rstrip())
        return res

    def gnt(self, *argv: str, timeout: float = 300) -> str:
        """Run a Ganeti command on the master; its stdout."""
        return self.run(0, list(argv), timeout=timeout).stdout

    # -- bring-up ------------------------------------------------------------------------
    def network_up(self) -> None:
        """The root bridge with the host address; Ceph must be bound to it before `up`."""
        if netns.bridge_up(self.bridge, f"{self.host_addr}/24"):
            progress(f"bridge {self.bridge} with {self.host_addr}/24 created")

    def up(self) -> None:
        """Start every node, create the cluster on node 0 and add the others. Cleans up after itself on failure."""
        started = time.monotonic()
        self._preflight()
        self.network_up()
        self.nodes_down()
        os.makedirs(self.workdir, exist_ok=True)
        with open(os.path.join(self.workdir, "bridge"), "w") as fh:
            fh.write(self.bridge + "\n")
        try:
            with ThreadPoolExecutor(len(self.nodes)) as pool:  # ssh-keygen and friends: ~2 s a node
                list(pool.map(self._start_node, self.nodes))
            progress(f"{len(self.nodes)} node(s) running; initialising cluster {CLUSTER_NAME} on {self.master}")
            self.run(0, ["gnt-cluster", "init", *INIT_FLAGS, CLUSTER_NAME])
            self.run(0, ["gnt-cluster", "modify", COLLECTORS])
            for node in self.nodes[1:]:
                self._join(node)
        except BaseException:
            progress("bring-up failed: stopping the nodes (their directories stay for a look)")
            self.nodes_down()
            raise
        progress(f"cluster {CLUSTER_NAME} up with {', '.join(self.node_names)} in {time.monotonic() - started:.1f} s")

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise TestbedError("the test bed needs root (namespaces, mounts, links)")
        for path in ("ceph.conf", "ganeti-ceph.yaml") if self.ceph_dir else ():
            if not os.path.exists(os.path.join(self.ceph_dir, path)):
                raise TestbedError(f"{self.ceph_dir}/{path} not found: bring Ceph up there first "
                                   f"(gnt-storage local-cluster up --dir {self.ceph_dir} --addr {self.host_addr})")
        others = sorted(d for d in {os.path.dirname(t) for t in netns.all_tags()} - {self.workdir}
                        if _bridge_of(d) in (self.bridge, None))
        if others:
            raise TestbedError(f"another test bed runs from {others[0]} (links and addresses are per host): "
                               f"bring it down first: python -m testbed.ganeti down --dir {others[0]}")
        if self.deb and not os.path.isfile(self.deb):
            raise TestbedError(f"{self.deb} not found: build it first (make deb)")
        for tool in ("unshare", "nsenter", "gnt-cluster", "sshd", "rbd-fuse", "dpkg" if self.deb else SETUP):
            if not os.path.exists(tool) and not any(os.path.exists(os.path.join(d, tool))
                                                    for d in netns.PATH.split(":")):
                raise TestbedError(f"{tool} not found; run `make install` (Ganeti, openssh-server, rbd-fuse)")

    def _start_node(self, node: nodefs.Node) -> None:
        """Namespaces, private files, network, sshd and the provider: a host ready to join."""
        nodefs.prepare(node)
        nodefs.seed(node, self.nodes, self.ceph_dir, CLUSTER_NAME, self.cluster_ip)
        holder = netns.spawn(node.dir, node.path("holder.log"))
        netns.drop_foreign_mounts(holder)
        self.run(node.index, ["sh", "-ec", nodefs.mount_script(node)])
        netns.veth_into(f"{self.veth_prefix}{node.index}", self.bridge, holder, "eth0")
        self.run(node.index, ["sh", "-ec", (
            f"ip link add {NODE_BRIDGE} type bridge\nip link set eth0 master {NODE_BRIDGE} up\n"
            f"ip addr add {node.addr}/24 dev {NODE_BRIDGE}\nip link set {NODE_BRIDGE} up\n")])
        self.run(node.index, ["/usr/lib/ganeti/ensure-dirs"])
        if self.deb:
            self.install_deb(node.index, self.deb)
        else:
            self.run(node.index, [SETUP, "install"])  # as a user would, into the node's /usr/local/lib
        self.run(node.index, ["/etc/init.d/ssh", "start"])

    def install_deb(self, index: int, deb: str) -> None:
        """`dpkg -i` of `deb` on node `index`, as an admin would; every dependency is the host's already.
        No systemd runs in a node: the maintainer scripts enable the units (deb-systemd-helper) and start none."""
        started = time.monotonic()
        self.run(index, [*DPKG, "-i", deb], timeout=300)
        progress(f"{self.nodes[index].short}: {os.path.basename(deb)} installed in {time.monotonic() - started:.1f} s")

    def _join(self, node: nodefs.Node) -> None:
        """Let the master in over ssh (what an admin does by hand), then `gnt-node add`."""
        master_key = self.nodes[0].path("root-ssh", "id_rsa.pub")
        with open(master_key) as fh, open(node.path("root-ssh", "authorized_keys"), "a") as out:
            out.write(fh.read())
        os.chmod(node.path("root-ssh", "authorized_keys"), 0o600)
        progress(f"adding {node.name}")
        self.run(0, ["gnt-node", "add", "--no-ssh-key-check", node.name])

    # -- tear-down ------------------------------------------------------------------------
    def nodes_down(self) -> None:
        """Kill every node of this work dir, however many `up` made (and with them their mounts, interfaces
        and processes); leave the root bridge."""
        tags = {n.dir for n in self.nodes} | {t for t in netns.all_tags() if os.path.dirname(t) == self.workdir}
        for tag in sorted(tags):
            for holder in netns.find(tag):
                self._detach_loops(holder)
                # Deleting the veth now takes the host end along at once, instead of whenever
                # the kernel gets round to cleaning up the dead namespace.
                netns.sh([*holder.enter(), "ip", "link", "del", "eth0"], check=False)
                netns.kill(holder)
        self._detach_loops()

    def network_down(self, wait: float = LISTENER_WAIT_S) -> None:
        """Remove the root bridge once nothing listens on its address. A daemon just stopped (by us,
        or by an earlier command's teardown) may hold its socket a while: wait for it, bounded; one
        that still listens then is named and the bridge kept."""
        found = listeners(self.host_addr) if netns.link_exists(self.bridge) else []
        if found:
            progress(f"waiting up to {wait:.0f} s for {'; '.join(found)} to stop listening on {self.host_addr}")
            left = runner.until(time.monotonic() + wait, lambda: listeners(self.host_addr), lambda got: not got, 0.2)
            if left:
                hint = f" (e.g. gnt-storage local-cluster down --dir {self.ceph_dir})" if self.ceph_dir else ""
                raise TestbedError(f"{'; '.join(left)} still listens on {self.host_addr} after {wait:.0f} s: stop "
                                   f"it{hint}, then run this again; bridge {self.bridge} kept")
        netns.link_delete(self.bridge)

    def down(self) -> None:
        """Everything `up` and `network_up` made, gone; safe to call any time, any number of times."""
        started = time.monotonic()
        self.nodes_down()
        self.network_down()
        progress(f"test bed in {self.workdir} down in {time.monotonic() - started:.1f} s")

    def _detach_loops(self, holder: Holder | None = None) -> None:
        """Loop devices are global: detach the node's (or, with no holder, any of our
        cluster's), else they would outlive the node and keep rbd-fuse's image open."""
        found = fuse_loop.of_node(holder)["loops"] if holder else self.leaked_loops() if self.ceph_dir else []
        for loop in found:
            netns.sh(["losetup", "-d", loop], check=False)

    def mappings(self, index: int) -> dict[str, list[str]]:
        """Node `index`'s rbd-fuse mounts and the loop devices over them."""
        return fuse_loop.of_node(self.holder(index))

    def leaked_loops(self) -> list[str]:
        """Loop devices over any fuse-loop mapping of our Ceph cluster, on any node."""
        assert self.ceph_dir, "a test bed without Ceph maps nothing"
        return fuse_loop.of_cluster(fuse_loop.ceph_fsid(os.path.join(self.ceph_dir, "ceph.conf")))

    def status(self) -> dict[str, list[int]]:
        """Holder pids of each node by name (empty: not running)."""
        return {n.name: [h.pid for h in netns.find(n.dir)] for n in self.nodes}


def listeners(addr: str) -> list[str]:
    """What listens on `addr` over TCP in our namespace (e.g. Ceph's daemons), one description each."""
    ports: dict[int | None, list[int]] = {}
    for c in psutil.net_connections("tcp4"):
        if c.status == psutil.CONN_LISTEN and c.laddr.ip == addr:
            ports.setdefault(c.pid, []).append(c.laddr.port)
    return [f"{f'pid {pid} ({shlex.join(procs.cmdline(pid))[:100]})' if pid else 'an exiting process'} "
            f"on port(s) {', '.join(map(str, sorted(p)))}" for pid, p in sorted(ports.items(), key=str)]


if __name__ == "__main__":
    from testbed.cli import main

    sys.exit(main())
