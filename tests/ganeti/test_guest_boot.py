"""A KVM instance that really boots Linux from its RBD disk, driven through its serial console.

The OS definition `boot` (testbed.os_boot) writes a tiny ext4 root
(testbed.guest_image) onto disk 0; Ganeti boots Debian's kernel from a file
on the node (kernel_path/initrd_path) under TCG (kvm_flag=disabled: nested
KVM does not boot Linux here) with that disk as root. The tests run in
file order on one instance: boot in userspace access, write a checksummed
file, live-migrate, grow the disk online and the file system inside,
export while it runs and check the exported file system on the host,
switch to kernelspace (gnt-storage rbd-access), boot again and read
everything back. The console transcript (CONSOLE_LOG) is the proof of what
the guest saw; a failure prints its tail.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph import runner
from ganeti_ceph.config import Config
from testbed import guest_image, os_boot, shared
from testbed.ganeti import Testbed
from testbed.guest_console import Console, serial_socket
from tests.ganeti import checks

# TCG boots take 20-50 s on a loaded 2-core machine, and the first run on a machine downloads the kernel.
pytestmark = pytest.mark.timeout(900)
CONSOLE_LOG = os.path.join(shared.ROOT, "guest-boot-console.log")
BOOT_DIR = f"/srv/ganeti/os/{os_boot.NAME}"  # in an OS search path of Ganeti; a node's /srv is its node dir
HV = (f"kvm:kernel_path={BOOT_DIR}/vmlinuz,initrd_path={BOOT_DIR}/initrd.img,root_path=/dev/vda,"
      "kernel_args=quiet,serial_console=true,kvm_flag=disabled,disk_type=paravirtual")
DISK_MIB, GROW_MIB = 256, 128
BOOT_S = 240.0  # a TCG boot takes 10-20 s; a loaded 2-core machine may take much longer
BLOB = "/data/blob"


@dataclasses.dataclass
class Guest:
    """The instance under test and what the guest should hold."""

    name: str
    console: Console
    access: str = "userspace"
    primary: int = 0
    disk_mib: int = DISK_MIB
    blob_sha: str = ""
    fs_blocks: int = 0
    history: list[str] = dataclasses.field(default_factory=list)
    exported: list[str] = dataclasses.field(default_factory=list)  # the history in the export

    def inst(self, tb: Testbed) -> checks.Inst:
        return checks.Inst(self.name, self.access, "kvm", self.primary,
                           sizes={v: self.disk_mib for v in checks.volumes(tb, self.name)})


def boot(tb: Testbed, g: Guest) -> None:
    """Attach to the console of the guest Ganeti just started, wait for its shell, log the boot in the guest."""
    drives = checks.qemu_drives(tb, g.primary, g.name)
    seen = [f"{d} -> {checks.disk_link(tb, g.primary, g.name, n)}" if d.startswith(checks.INSTANCE_DISKS) else d
            for n, d in enumerate(drives)]
    g.console.note(f"{g.access}: QEMU on {tb.node_names[g.primary]} opened {', '.join(seen)}")
    g.console.attach(serial_socket(tb.holder(g.primary).pid, g.name))
    waited = g.console.wait_shell(BOOT_S)
    g.console.note(f"shell answered {waited:.1f} s after attaching ({g.access})")
    g.console.run("cat /proc/cmdline; mount | grep ' / '")
    line = f"boot {len(g.history) + 1} {g.access}"
    g.console.run(f"echo {line} $(cat /proc/sys/kernel/random/boot_id) >> /data/history && sync")
    g.history.append(line)


def read_back(g: Guest) -> None:
    """From the disk, not the page cache: the checksum of the blob and the boots logged so far."""
    g.console.run("sync; echo 3 > /proc/sys/vm/drop_caches")
    assert g.console.run(f"sha256sum {BLOB}").split()[0] == g.blob_sha
    logged = g.console.run("cat /data/history").splitlines()
    assert [" ".join(x.split()[:3]) for x in logged] == g.history, logged


def fs_blocks(g: Guest) -> int:
    """Blocks of the guest's root file system, as its kernel's statfs counts them."""
    out = g.console.run("stat -f -c '%b %S' /")
    blocks, size = map(int, out.split()[-2:])
    return blocks * size // guest_image.BLOCK


@pytest.fixture(scope="module")
def guest(testbed: Testbed) -> Iterator[Guest]:
    built = guest_image.build()
    for node in testbed.nodes:
        os_boot.install(node.path("srv", "ganeti", "os"),
                        {"root.img": built.root, "vmlinuz": built.vmlinuz, "initrd.img": built.initrd})
    if os.path.exists(CONSOLE_LOG):
        os.unlink(CONSOLE_LOG)
    g = Guest(f"boot{time.monotonic_ns() % 10**6}.gcb.test", Console(CONSOLE_LOG))
    g.console.note(f"gnt-instance add {g.name}: userspace, {DISK_MIB} MiB, root image {built.root_mib} MiB")
    testbed.gnt("gnt-instance", "add", "-t", "ext", "--disk", f"0:size={DISK_MIB}M,provider=rbd,access=userspace",
                "-o", f"{os_boot.NAME}+{os_boot.VARIANT}", "-H", HV, "-B", "memory=256M,vcpus=1",
                "-n", testbed.node_names[0], "--no-ip-check", "--no-name-check", g.name, timeout=600)
    yield g
    g.console.close()
    testbed.run(0, ["gnt-backup", "remove", g.name], check=False)
    testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", g.name],
                check=False)
    print(f"guest console transcript: {CONSOLE_LOG}")


def test_boots_from_its_rbd_disk_in_userspace(testbed: Testbed, ceph_admin: Config, guest: Guest) -> None:
    with guest.console.shown_on_failure():
        checks.expect_state(testbed, ceph_admin, guest.inst(testbed))  # QEMU opens rbd:rbd/<vol>, nothing mapped
        boot(testbed, guest)
        assert "/dev/vda on / type ext4" in guest.console.run("mount")
        guest.console.run(f"dd if=/dev/urandom of={BLOB} bs=1M count=8 2>/dev/null && sync", timeout=120)
        guest.blob_sha = guest.console.run(f"sha256sum {BLOB}").split()[0]
        read_back(guest)


def test_live_migration_keeps_the_data(testbed: Testbed, ceph_admin: Config, guest: Guest) -> None:
    with guest.console.shown_on_failure():
        guest.console.note("gnt-instance migrate")
        testbed.gnt("gnt-instance", "migrate", "-f", guest.name, timeout=600)
        guest.primary = 1
        checks.expect_state(testbed, ceph_admin, guest.inst(testbed))
        guest.console.attach(serial_socket(testbed.holder(1).pid, guest.name))
        guest.console.run("true")  # the same running shell, now on node1's QEMU
        read_back(guest)


def test_grow_disk_online_and_resize_the_file_system(testbed: Testbed, ceph_admin: Config, guest: Guest) -> None:
    with guest.console.shown_on_failure():
        before = fs_blocks(guest)
        assert before * guest_image.BLOCK < (guest_image.ROOT_MIB + 1) * 2**20  # the image's size, not the disk's
        guest.console.note(f"gnt-instance grow-disk {GROW_MIB}M")
        testbed.gnt("gnt-instance", "grow-disk", guest.name, "0", f"{GROW_MIB}M")
        guest.disk_mib += GROW_MIB
        want = (DISK_MIB + GROW_MIB) * 2**20
        # virtio-blk tells the guest of the new capacity itself: no rescan needed.
        deadline = time.monotonic() + 30
        while int(guest.console.run("cat /sys/block/vda/size")) * 512 != want:
            assert time.monotonic() < deadline, "the guest never saw the disk grow"
            time.sleep(1)
        out = guest.console.run("resize2fs /dev/vda", timeout=120)
        assert f"now {want // guest_image.BLOCK} (4k) blocks long" in out
        guest.fs_blocks = fs_blocks(guest)  # less the journal and metadata, as statfs counts
        assert guest.fs_blocks > 0.9 * want // guest_image.BLOCK
        guest.console.run("df -k /")
        checks.expect_state(testbed, ceph_admin, guest.inst(testbed))
        read_back(guest)


def test_export_while_running_holds_a_clean_file_system(testbed: Testbed, guest: Guest, tmp_path) -> None:
    with guest.console.shown_on_failure():
        guest.console.note("gnt-backup export --noshutdown, the root frozen meanwhile (a consistent image)")
        guest.console.run("sync; fsfreeze --freeze /")
        try:
            testbed.gnt("gnt-backup", "export", "--noshutdown", "-n", testbed.node_names[0], guest.name,
                        timeout=600)
        finally:
            guest.console.run("fsfreeze --unfreeze /")
        (image,) = [p for p in glob.glob(testbed.nodes[0].path("var-lib-ganeti", "export", guest.name, "*"))
                    if not p.endswith("config.ini")]
        assert os.path.getsize(image) == (DISK_MIB + GROW_MIB) * 2**20
        fsck = runner.execute(["e2fsck", "-fn", image], "check the exported file system", 120)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        blob = tmp_path / "blob"
        runner.run(["debugfs", "-R", f"dump {BLOB} {blob}", image], "copy the blob out of the export", 60)
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == guest.blob_sha
        info = runner.run(["dumpe2fs", "-h", image], "read the exported superblock", 60)
        blocks = int(re.search(r"Block count:\s+(\d+)", info).group(1))
        assert blocks == guest.disk_mib * 2**20 // guest_image.BLOCK  # the file system grown in the guest
        guest.exported = list(guest.history)
        guest.console.note(f"export {os.path.basename(image)}: e2fsck -fn clean, {BLOB} sha256 matches, "
                           f"{blocks} blocks")


def test_switch_to_kernelspace_and_boot_again(testbed: Testbed, ceph_admin: Config, guest: Guest) -> None:
    with guest.console.shown_on_failure():
        guest.console.run("sync; mount -o remount,ro /")  # clean, as a shutdown would leave it
        guest.console.note("gnt-instance shutdown; gnt-storage rbd-access kernelspace; gnt-instance startup")
        testbed.gnt("gnt-instance", "shutdown", "--timeout=0", guest.name)  # no acpid in the guest
        testbed.run(0, [testbed.gnt_storage, "rbd-access", guest.name, "kernelspace"], timeout=600)
        testbed.gnt("gnt-instance", "startup", guest.name, timeout=600)
        guest.access = "kernelspace"
        checks.expect_state(testbed, ceph_admin, guest.inst(testbed))  # QEMU opens the node's loop device
        boot(testbed, guest)
        read_back(guest)
        assert fs_blocks(guest) == guest.fs_blocks
        assert [x.split()[2] for x in guest.history] == ["userspace", "kernelspace"]


@pytest.mark.full
def test_backup_import_boots_a_copy(testbed: Testbed, ceph_admin: Config, guest: Guest) -> None:
    """gnt-backup import of the export above, kernelspace: the OS's import script writes the stream onto the new
    instance's block device, and the copy boots with the blob and history the export held."""
    assert guest.exported, "needs the export of test_export_while_running_holds_a_clean_file_system"
    copy = dataclasses.replace(guest, name=f"copy-{guest.name}", access="kernelspace", primary=0,
                               history=list(guest.exported))
    copy.console = Console(CONSOLE_LOG)
    with copy.console.shown_on_failure():
        copy.console.note(f"gnt-backup import {copy.name} from the export of {guest.name}, kernelspace")
        try:
            testbed.gnt("gnt-backup", "import", "-t", "ext",
                        "--disk", f"0:size={guest.disk_mib}M,provider=rbd,access=kernelspace",
                        "--src-node", testbed.node_names[0], "--src-dir", f"/var/lib/ganeti/export/{guest.name}",
                        "--net", "0:mac=generate", "-H", HV, "-B", "memory=256M,vcpus=1",
                        "-n", testbed.node_names[0], "--no-ip-check", "--no-name-check", copy.name, timeout=900)
            # gnt-backup import never starts the instance (and leaves its kernelspace disk mapped, as add does).
            testbed.gnt("gnt-instance", "startup", copy.name, timeout=600)
            inst = copy.inst(testbed)  # not expect_state: node1 maps the first guest's disk meanwhile
            checks.expect_ceph(testbed, ceph_admin, inst)
            checks.expect_qemu(testbed, inst)
            boot(testbed, copy)
            read_back(copy)
            assert fs_blocks(copy) == guest.fs_blocks
        finally:
            copy.console.close()
            testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", copy.name], check=False)
