"""A small VM on Debian's kernel, driven over SSH: the test host for krbd, rbd-nbd and fio.

This machine's kernel has no rbd or nbd module, so tests that need them run
inside a QEMU guest (TCG: nested KVM does not boot Linux here) on Debian's
kernel (testbed/kernel.py). Nothing is built for the guest: its root is the
host's own / shared read-only over virtio-9p, under an overlay whose upper
layer is a tmpfs, so the guest runs exactly the host's Python, venv,
ceph-common, rbd-nbd, fio, udev and sshd. The initramfs holds only a static
busybox, the modules (virtio, 9p, overlay, then libceph, rbd, nbd) and the
/init that mounts that root and switches to it; busybox init, copied there,
is PID 1 (it reaps the orphans rbd-nbd leaves) and starts the host's udevd
and sshd. The host root's dotfiles are hidden (a tmpfs on /root).

The guest joins a bridge of our own (`Bridge`, a /24: host .1, guests .2 and
up) through a tap, so a Ceph bound to the bridge address serves it. A second
9p share, `shared` (the test dir), is live: what the host writes there after
the boot (configs, the provider) the guest sees at once, under the same path.
The SSH keys are the VM's own, made 0600 in its dir.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import subprocess
import time
from collections.abc import Sequence

import paramiko

from ganeti_ceph import procs, runner
from testbed import initramfs, kernel, netns

# Loaded in this order by /init; each module's own dependencies (from its modinfo) go first.
MODULES = ("virtio_pci", "virtio_net", "9pnet_virtio", "9p", "overlay",
           "crc32c_generic", "libcrc32c", "dns_resolver", "rbd", "nbd")
BOOT_TIMEOUT = 180.0  # TCG on a loaded 2-core machine: ~10 s to /init, ~30 s to sshd, 60+ when busy
READY = "GKT-READY"
FAILED = "GKT-FAILED"
SSHD = "/usr/sbin/sshd"
UDEVD = "/lib/systemd/systemd-udevd"


class VMError(RuntimeError):
    """The VM did not boot, or a command in it could not be run."""


def link_name(net: str, kind: str) -> str:
    """An interface name from the /24 and a kind (b: bridge, t<N>: tap), so runs on other nets never
    collide; "255.255.255" + "t9" is 15 characters, Linux's limit."""
    return "gk" + net.replace(".", "-") + kind


class Bridge:
    """A bridge with `<net>.1/24` on the host: what Ceph binds to and the VMs' taps join."""

    def __init__(self, net: str) -> None:
        if not re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}", net):
            raise VMError(f"network {net!r} is not the first three octets of a /24 (e.g. 198.18.200)")
        self.net = net
        self.name = link_name(net, "b")
        self.addr = f"{net}.1"

    def __enter__(self) -> Bridge:
        taken = netns.sh(["ip", "-4", "-o", "addr", "show"]).stdout
        for dev, addr in re.findall(r"^\d+:\s+(\S+)\s+inet\s+(\d+\.\d+\.\d+)\.", taken, re.M):
            if addr == self.net and dev != self.name:  # a route of the host's own would be shadowed
                raise VMError(f"network {self.net}.0/24 is in use on {dev}: set GANETI_KERNEL_TEST_NET to a free /24")
        netns.bridge_up(self.name, f"{self.addr}/24")
        return self

    def __exit__(self, *exc: object) -> None:
        netns.link_delete(self.name)


INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /host /rw /newroot
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "gkt: loading modules" > /dev/console
for m in {modules}; do insmod /modules/$m.ko || echo "gkt: insmod $m failed" > /dev/console; done
if ! /bin/sh /stage1; then echo "{failed} stage1" > /dev/console; exec sh; fi
umount /proc /sys /dev
exec switch_root /newroot /run/gkt/busybox init
"""

def checkout_bind(repo: str = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) -> str:
    """A checkout under /root stays visible through the tmpfs over the guest's /root (stage 1's line)."""
    if repo != "/root" and not repo.startswith("/root/"):
        return ""
    return f"mkdir -p /newroot{repo}; mount -o bind /host{repo} /newroot{repo}"


# The root (host / read-only, tmpfs over it), the live test dir, the NIC, then busybox init's inittab.
STAGE1 = """set -e
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /host
mount -t tmpfs -o size=256m rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot
for d in run tmp; do mount -t tmpfs -o mode=1777 $d /newroot/$d; done
mount -t tmpfs -o mode=0700 root /newroot/root  # not the host's dotfiles: its .bashrc ran in every SSH command
{checkout}
mount -t proc proc /newroot/proc; mount -t sysfs sys /newroot/sys; mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot{shared} /newroot/run/gkt
mount -t devpts devpts /newroot/dev/pts
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=none,msize=512000 shared /newroot{shared}
cp /bin/busybox /newroot/run/gkt/busybox
cp /inittab /newroot/etc/inittab
ip link set lo up; ip addr add {guest}/24 dev eth0; ip link set eth0 up
echo "gkt: root mounted, network {guest} up" > /dev/console
"""

# Run by busybox init (PID 1 in the new root: it reaps what rbd-nbd and sshd leave): udev, then sshd.
STAGE2 = """mkdir -p /run/sshd /run/udev
hostname {hostname}
{udevd} --daemon  # no coldplug: devtmpfs made the nodes; udevd serves the events of new mappings
{sshd} -E /run/gkt/sshd.log -f /dev/null -h {host_key} -o ListenAddress={guest} \
  -o PermitRootLogin=prohibit-password -o AuthorizedKeysFile={auth_keys} -o StrictModes=no -o UsePAM=no \
  -o UseDNS=no -o PidFile=/run/sshd.pid -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
  -o MaxSessions=50 -o MaxStartups=50 || exit 1
echo "{ready}" > /dev/console
"""

# busybox init runs a line with shell syntax as `sh -c "exec LINE"`: the inner sh keeps the `||`.
INITTAB = """::sysinit:/bin/sh -c '/bin/sh {stage2} || echo "{failed} stage2" > /dev/console'
"""


class KernelVM:
    """One guest on Debian's kernel (1 vCPU under TCG), its console in `console_log`, commands over SSH.

    `dir` holds everything of this VM (keys, initramfs, console log) and must be under `shared`, the test dir
    the guest sees live. The constructor only records; `boot()` (or `with`) starts it, `close()` stops it
    and removes its tap."""

    def __init__(self, vm_dir: str, bridge: Bridge, shared: str, index: int = 2, memory_mib: int = 1024,
                 qemu_args: Sequence[str] = ()) -> None:
        self.dir = os.path.abspath(vm_dir)
        self.shared = os.path.abspath(shared)
        if not (self.dir + "/").startswith(self.shared + "/"):
            raise VMError(f"the VM dir {self.dir} must be under the shared dir {self.shared}")
        self.bridge = bridge
        self.addr = f"{bridge.net}.{index}"
        self.tap = link_name(bridge.net, f"t{index}")
        self.memory_mib = memory_mib
        self.qemu_args = tuple(qemu_args)  # more devices, e.g. a -drive through QEMU's librbd (bench/datapath.py)
        self.console_log = os.path.join(self.dir, "console.log")
        self.kernel: kernel.Kernel | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.ssh: paramiko.SSHClient | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> KernelVM:
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Start QEMU and wait until sshd answers; raise VMError with the console's tail if it does not."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.kernel = kernel.fetch()
        self._keys()
        initrd = self._initramfs()
        for stale in procs.find("qemu-system-x86_64", arg=f"file:{self.console_log}"):  # of a killed session
            procs.terminate(stale, grace=5)
        if netns.link_exists(self.tap):
            netns.link_delete(self.tap)
        open(self.console_log, "w").close()  # a reused dir's log holds the last boot's READY
        netns.sh(["ip", "tuntap", "add", "dev", self.tap, "mode", "tap"])
        netns.sh(["ip", "link", "set", self.tap, "master", self.bridge.name, "up"])
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(self.memory_mib), "-smp", "1",
                "-name", f"gkt-{self.addr}", "-nodefaults", "-no-user-config", "-display", "none",
                "-serial", f"file:{self.console_log}", "-monitor", "none", "-no-reboot",
                "-kernel", self.kernel.vmlinuz, "-initrd", initrd,
                "-append", "console=ttyS0 panic=-1 quiet loglevel=4",
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
                "-virtfs", f"local,path={self.shared},mount_tag=shared,security_model=none,readonly=on",
                "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,mac={self._mac()}", *self.qemu_args]
        with open(self.path("qemu.log"), "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        if not runner.until(deadline, lambda: any(w in self.console() for w in (READY, FAILED))
                            or self.proc.poll() is not None, interval=0.5):
            raise VMError(f"the VM printed no {READY} within {timeout:.0f} s{self.tail()}")
        if FAILED in self.console():
            raise VMError(f"the VM's start-up failed{self.tail()}")
        if self.proc.poll() is not None:
            raise VMError(f"QEMU exited with {self.proc.returncode}{self.tail()}")
        self.ssh = runner.until(deadline, self._connect, interval=1.0)
        if self.ssh is None:
            raise VMError(f"sshd in the VM did not answer on {self.addr} within {timeout:.0f} s{self.tail()}")

    def close(self) -> None:
        """Stop QEMU (it holds no data we keep) and remove the tap; nothing of the VM runs afterwards."""
        if self.ssh is not None:
            self.ssh.close()
            self.ssh = None
        if self.proc is not None:
            procs.kill_group(self.proc)
            self.proc = None
        netns.link_delete(self.tap)

    # -- inside the guest --------------------------------------------------------------
    def run(self, cmd: str | Sequence[str], timeout: float = 120.0) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of `cmd` (a shell line, or argv quoted for one) run as root in the
        guest; VMError if it does not end within `timeout` (its channel is closed, the command may linger)."""
        if self.ssh is None:
            raise VMError("the VM is not running: boot() it first")
        line = cmd if isinstance(cmd, str) else shlex.join(cmd)
        transport = self.ssh.get_transport()
        if transport is None or not transport.is_active():
            raise VMError(f"the SSH connection to the VM is gone{self.tail()}")
        chan = transport.open_session(timeout=30)
        chan.exec_command(line)
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while not (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()):
                if time.monotonic() > deadline:
                    raise VMError(f"{line!r} did not end within {timeout:.0f} s in the VM; output so far: "
                                  f"{out.decode(errors='replace')[-500:]!r} {err.decode(errors='replace')[-500:]!r}")
                got = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                if not got:
                    time.sleep(0.02)
            return chan.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
        finally:
            chan.close()

    def check(self, cmd: str | Sequence[str], timeout: float = 120.0) -> str:
        """stdout of `cmd`, which must exit 0."""
        rc, out, err = self.run(cmd, timeout)
        if rc != 0:
            raise VMError(f"{cmd!r} failed in the VM (exit {rc}): {err.strip() or out.strip()}")
        return out

    def console(self) -> str:
        try:
            with open(self.console_log, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        """The console's last lines, for an error message."""
        return f"; console ({self.console_log}), last lines:\n" + "\n".join(self.console().splitlines()[-lines:])

    # -- building it -------------------------------------------------------------------
    def _mac(self) -> str:
        return "52:54:00:" + ":".join(f"{int(o):02x}" for o in self.addr.split(".")[1:])

    def _keys(self) -> None:
        """The guest's host key and our client key, both new for this VM (0600, only root reads them)."""
        for name in ("host_key", "client_key"):
            path = self.path(name)
            for old in (path, path + ".pub"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old)
            runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"gkt-{name}", "-f", path],
                       f"make the VM's {name}", 30)
        with open(self.path("client_key.pub")) as src, open(
                os.open(self.path("authorized_keys"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as dst:
            dst.write(src.read())

    def _initramfs(self) -> str:
        assert self.kernel is not None
        mods = self.kernel.in_load_order(MODULES)
        stage2 = self.path("stage2")
        with open(stage2, "w") as fh:
            fh.write(STAGE2.format(hostname=f"gkt-{self.addr.replace('.', '-')}", udevd=UDEVD, sshd=SSHD,
                                   vm_dir=self.dir, host_key=self.path("host_key"), guest=self.addr,
                                   auth_keys=self.path("authorized_keys"), ready=READY))
        files: dict[str, initramfs.Source] = {
            "init": (INIT.format(modules=" ".join(name for name, _ in mods), failed=FAILED).encode(), 0o755),
            "stage1": STAGE1.format(shared=self.shared, guest=self.addr, checkout=checkout_bind()).encode(),
            "inittab": INITTAB.format(stage2=stage2, failed=FAILED).encode(),
            "bin/busybox": self.kernel.busybox,
        }
        files.update({f"modules/{name}.ko": path for name, path in mods})
        return initramfs.write(self.path("initrd.gz"), files)

    def _connect(self) -> paramiko.SSHClient | None:
        client = paramiko.SSHClient()
        with open(self.path("host_key.pub")) as fh:
            kind, key = fh.read().split()[:2]
        client.get_host_keys().add(self.addr, kind, paramiko.Ed25519Key(data=base64.b64decode(key)))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.addr, username="root", key_filename=self.path("client_key"), look_for_keys=False,
                           allow_agent=False, timeout=10, banner_timeout=20, auth_timeout=20)
        except (OSError, paramiko.SSHException):
            client.close()
            return None
        return client

