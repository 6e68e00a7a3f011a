"""The Ganeti half of `make demo`: a KVM instance on an RBD disk, step by step.

A one-node Ganeti cluster (testbed/, in namespaces) on the demo's Ceph, with
our provider and hooks installed as a user installs them. Each step prints
the gnt-* command and the drive QEMU is using.
"""

from __future__ import annotations

import contextlib
import os
import sys

from ganeti_ceph.errors import GanetiCephError
from testbed import ceph as tb_ceph
from testbed import qemu
from testbed.ganeti import NET_PREFIX, TESTBED_ID, Testbed, TestbedError
from testbed.netns import NetnsError

INSTANCE = "demo1.gcb.test"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


class Demo:
    def __init__(self, tb: Testbed) -> None:
        self.tb = tb

    def gnt(self, *argv: str) -> str:
        print("$ " + " ".join(argv), flush=True)
        res = self.tb.run(0, list(argv), check=False, timeout=600)
        out = (res.stdout + res.stderr).strip()
        if out:
            print("  " + out.replace("\n", "\n  "))
        if res.returncode != 0:
            raise GanetiCephError(f"{argv[0]} {argv[1]} failed (exit {res.returncode})")
        return res.stdout

    def drives(self) -> None:
        """What QEMU has open, from QMP query-block."""
        for device, name, size in qemu.drives(self.tb, 0, INSTANCE):
            how = "QEMU's own librbd" if name.startswith("rbd:") else "a block device"
            print(f"  QEMU drive {device}: {size // 2**20} MiB, {name} ({how})")

def run(tb: Testbed) -> None:
    d = Demo(tb)
    node = tb.node_names[0]
    step("gnt-instance add: a KVM instance with a 512 MiB RBD disk, userspace access (QEMU's own librbd)")
    d.gnt("gnt-instance", "add", "-t", "ext", "--disk", "0:size=512M,provider=rbd,access=userspace",
          "-H", "kvm:disk_type=scsi-hd,scsi_controller_type=virtio-scsi-pci", "-o", "noop+default",
          "-B", "memory=128M", "-n", node, "--no-ip-check", "--no-name-check", INSTANCE)
    d.drives()
    step("gnt-instance grow-disk, online: 512 -> 768 MiB; QEMU sees the new size")
    d.gnt("gnt-instance", "grow-disk", INSTANCE, "0", "256M")
    d.drives()
    step("hot-add a second 128 MiB disk, then hot-remove it (--hotplug)")
    d.gnt("gnt-instance", "modify", "--hotplug", "-f", "--disk", "add:size=128M,provider=rbd,access=userspace",
          INSTANCE)
    d.drives()
    d.gnt("gnt-instance", "modify", "--hotplug", "-f", "--disk", "1:remove", INSTANCE)
    d.drives()
    step("gnt-backup export of the running instance, through a snapshot")
    d.gnt("gnt-backup", "export", "--noshutdown", "-n", node, INSTANCE)
    step("switch the disk to kernelspace access (gnt-storage rbd-access; the instance must be stopped)")
    d.gnt("gnt-instance", "shutdown", "--timeout=0", INSTANCE)
    d.gnt(os.path.join(os.path.dirname(sys.executable), "gnt-storage"), "rbd-access", INSTANCE, "kernelspace")
    d.gnt("gnt-instance", "startup", INSTANCE)
    d.drives()
    step("gnt-instance remove")
    d.gnt("gnt-instance", "remove", "-f", "--shutdown-timeout=0", INSTANCE)


def main(workdir: str, ceph_dir: str, ceph_port: int, keep: bool, bed_id: str = TESTBED_ID,
         net: str = NET_PREFIX.rstrip(".")) -> None:
    """Bring up, walk through, bring down; a failure of the bed or its Ceph is one line, not a traceback.
    `bed_id` and `net`: the bed's bridge and network (the defaults: GANETI_TESTBED_ID/NET)."""
    tb = Testbed(workdir, ceph_dir, nodes=1, bed_id=bed_id, net=net)
    try:
        step(f"bring up a local Ceph on {tb.host_addr} and a one-node Ganeti cluster (testbed/)")
        tb_ceph.bed_down(tb)  # what an earlier run left, its sockets waited for
        tb.network_up()
        try:
            tb_ceph.up(ceph_dir, tb.host_addr, ceph_port)
            tb.up()
            run(tb)
        except BaseException:
            if not keep:
                with contextlib.suppress(TestbedError, NetnsError, tb_ceph.CephError):
                    tb_ceph.bed_down(tb)  # best effort: the first failure is the one to report
            raise
        finally:
            if keep:
                step(f"kept running: `.venv/bin/python -m testbed.ganeti down --dir {workdir} --ceph-dir {ceph_dir} "
                     "--with-ceph` stops it")
        if not keep:
            step("bring Ganeti and Ceph down")
            tb_ceph.bed_down(tb)
    except (TestbedError, NetnsError, tb_ceph.CephError) as exc:
        raise GanetiCephError(str(exc)) from None
