"""Data path figures: fio through each access path versus fio's own rbd engine, in one kernel VM.

Modes (`datapath-<mode>-<pattern>`): userspace (the image is a virtio disk
of the VM through QEMU's librbd, `-drive file=rbd:...,cache=none`), krbd,
rbd-nbd and fuse-loop (mapped in the guest by the product's own mappers,
ganeti_ceph.rbd.mappers). Ours: fio with libaio and O_DIRECT on that block
device. Baseline: `fio --ioengine=rbd` on the same image, same job, run in
the same guest. Under TCG the guest's CPU is the bottleneck, so both sides
pay the same emulation there; each figure is fio's own I/O time of the job
(its `runtime`, not the process's: the rbd engine's connect is left out).

One VM (testbed/kernel_vm.py, Debian's kernel, 1 vCPU, TCG) on a bridge of
its own ($GANETI_KERNEL_TEST_NET, else 198.18.9), a local Ceph bound to the
bridge's address (a shared bench slot), one 64 MiB image per mode written
in full before the first sample (reads see data, not holes); all brought up
on first use, torn down after the last datapath row (or at the end of the
run). doc/benchmarks.md says what the ratios mean here: userspace's
librbd runs natively in QEMU on the host, so its ratio is skewed low.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable

from harness import (
    GNT_STORAGE,
    REPO,
    SCRATCH,
    BenchError,
    Ctx,
    Result,
    Shared,
    bench,
    compare,
    log,
    run_quiet,
    time_cmd,
)

from ganeti_ceph.errors import GanetiCephError
from testbed.kernel_vm import Bridge, KernelVM, VMError

NET = os.environ.get("GANETI_KERNEL_TEST_NET", "198.18.9")
HOME = os.path.join(SCRATCH, "datapath")  # the mappers' configs, the VM's keys and console
CLIENT = "ganeti"
POOL = "rbd"
IMAGE_MIB = 64
MODES = ("userspace", "krbd", "rbd-nbd", "fuse-loop")
# name -> fio --rw, block size, bytes moved; random jobs roam the whole image. Both sides get exactly these.
PATTERNS = {"seqread": ("read", "1M", "64M"), "seqwrite": ("write", "1M", "64M"),
            "randread": ("randread", "4k", "4M"), "randwrite": ("randwrite", "4k", "4M")}
FIO_COMMON = ("--name=datapath", "--direct=1", "--iodepth=16", f"--size={IMAGE_MIB}M", "--output-format=json")
# Samples per side: the targeted modes' jobs take seconds, the reported ones' up to half a minute under TCG.
RUNS = {"userspace": 5, "krbd": 5, "rbd-nbd": 3, "fuse-loop": 3}
GUEST_MODULES = ("virtio_blk", "fuse", "loop")  # not in the VM's initramfs list; krbd's and nbd's are
FIO_TIMEOUT = 600.0  # 4 MiB of 4K writes through rbd-fuse under TCG took ~25 s; a busy host is slower
MAP_TIMEOUT = 180.0
# Run in the guest by the host's venv Python: map with the product's mapper named by the config, print the device.
MAP = """import sys
sys.path[:0] = [sys.argv[1]]
from ganeti_ceph import config
from ganeti_ceph.errors import GanetiCephError
from ganeti_ceph.rbd import mappers
from ganeti_ceph.rbd.mappers.table import Target
try:
    cfg = config.load(sys.argv[2])
    print(mappers.for_config(cfg).map(Target(config.conf_fsid(cfg.conf) or "", cfg.pool, sys.argv[3])))
except GanetiCephError as exc:
    sys.exit(str(exc))
"""


def image(mode: str) -> str:
    return f"datapath-{mode}"


def fio_job(pattern: str) -> list[str]:
    """The job both sides run, engine and target aside."""
    rw, bs, amount = PATTERNS[pattern]
    return [*FIO_COMMON, f"--rw={rw}", f"--bs={bs}", f"--io_size={amount}"]


def fio_seconds(out: str, pattern: str) -> float:
    """fio's I/O time of the job (read + write runtime, ms in its JSON); BenchError unless it moved it all."""
    try:
        job = json.loads(out[out.index("{"):])["jobs"][0]
    except (ValueError, KeyError, IndexError) as exc:
        raise BenchError(f"fio printed no job result ({exc}): {out[-300:]!r}") from None
    moved = job["read"]["io_bytes"] + job["write"]["io_bytes"]
    want = int(PATTERNS[pattern][2][:-1]) << 20
    if job["error"] or moved != want:
        raise BenchError(f"fio moved {moved} of {want} bytes (error {job['error']})")
    return (job["read"]["runtime"] + job["write"]["runtime"]) / 1000.0


class Lab:
    """The bridge, the Ceph on it, the images and the VM; devices mapped on first use, one per mode."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.bridge = Bridge(NET)
        self.root, self.port = shared.slots.slot("datapath-cluster")
        self.conf = os.path.join(self.root, "ceph.conf")  # its [client] keyring line names the client's keyring
        self.vm: KernelVM | None = None
        self.devices: dict[str, str] = {}
        self.steps: list[Callable[[], None]] = []  # tear-down, last first

    @classmethod
    def start(cls, shared: Shared) -> Lab:
        lab = cls(shared)
        shared.on_close(lab.close)  # also after a half-done start
        log(f"datapath: bridge {lab.bridge.name} on {NET}.0/24, Ceph in {lab.root}, a kernel VM under TCG")
        try:
            lab.up()
        except (VMError, OSError, GanetiCephError) as exc:  # the bridge's ip(8), the VM, the kernel fetch
            raise BenchError(f"{type(exc).__name__}: {exc}") from None
        return lab

    def up(self) -> None:
        self.bridge.__enter__()
        self.steps.append(lambda: self.bridge.__exit__(None, None, None))
        self.steps.append(lambda: run_quiet([GNT_STORAGE, "local-cluster", "down", "--dir", self.root]))
        time_cmd([GNT_STORAGE, "local-cluster", "up", "--dir", self.root, "--port", str(self.port),
                  "--addr", self.bridge.addr], timeout=300)
        for mode in MODES:
            self.make_image(mode)
        shutil.rmtree(HOME, ignore_errors=True)  # an old console.log would show GKT-READY before QEMU rewrites it
        os.makedirs(HOME, mode=0o700)
        drive = (f"file=rbd:{POOL}/{image('userspace')}:id={CLIENT}:conf={self.conf},format=raw,if=virtio,"
                 "cache=none")
        # The guest sees SCRATCH live (its own /tmp is a tmpfs): the cluster's conf and keyring, HOME.
        self.vm = KernelVM(os.path.join(HOME, "vm"), self.bridge, SCRATCH, qemu_args=["-drive", drive])
        self.steps.append(self.vm.close)  # mappings, rbd-nbd and rbd-fuse end with the guest
        self.vm.boot()
        assert self.vm.kernel is not None
        self.guest(" && ".join(f"insmod {self.vm.kernel.module(m)}" for m in GUEST_MODULES), 60)
        self.devices["userspace"] = self.userspace_disk()

    def close(self) -> None:
        """Stop the VM, the Ceph and the bridge (what of them came up); a second call does nothing."""
        while self.steps:
            self.steps.pop()()

    def rbd(self, *args: str, timeout: float = 120) -> None:
        time_cmd(["rbd", "-c", self.conf, "--id", CLIENT, *args], timeout=timeout)

    def make_image(self, mode: str) -> None:
        """A fresh image, written in full on the host (untimed), so that reads fetch real objects."""
        self.rbd("create", "--size", f"{IMAGE_MIB}M", f"{POOL}/{image(mode)}")
        self.rbd("bench", "--io-type", "write", "--io-size", "4M", "--io-threads", "4", "--io-total",
                 f"{IMAGE_MIB}M", "--io-pattern", "seq", f"{POOL}/{image(mode)}", timeout=300)

    def guest(self, cmd: str, timeout: float = FIO_TIMEOUT) -> str:
        assert self.vm is not None
        try:
            return self.vm.check(cmd, timeout)
        except VMError as exc:
            raise BenchError(str(exc)) from None

    def userspace_disk(self) -> str:
        """The VM's only virtio disk, checked to be the image's size."""
        name = self.guest("ls /sys/block | grep '^vd'", 30).split()
        size = int(self.guest(f"cat /sys/block/{name[0]}/size", 30)) * 512 if len(name) == 1 else 0
        if size != IMAGE_MIB << 20:
            raise BenchError(f"the VM shows virtio disks {name} ({size} bytes), not one of {IMAGE_MIB} MiB")
        return f"/dev/{name[0]}"

    def device(self, mode: str) -> str:
        """The mode's block device in the guest, mapped by the product's mapper on first use."""
        if mode not in self.devices:
            cfg = os.path.join(HOME, f"{mode}.yaml")
            with open(os.path.join(self.root, "ganeti-ceph.yaml")) as src, open(cfg, "w") as dst:
                lines = [line for line in src if not line.startswith(("mapper:", "run_dir:"))]
                dst.writelines([*lines, f"mapper: {mode}\n", f"run_dir: /run/gkt/datapath-{mode}\n"])
            dev = self.guest(shlex.join([sys.executable, "-c", MAP, REPO, cfg, image(mode)]), MAP_TIMEOUT).strip()
            log(f"datapath: {image(mode)} mapped at {dev} in the guest by the {mode} mapper")
            self.devices[mode] = dev
        return self.devices[mode]

    def fio(self, argv: list[str], pattern: str, env: str = "") -> float:
        return fio_seconds(self.guest(env + shlex.join(["fio", *argv, *fio_job(pattern)])), pattern)

    def ours(self, mode: str, pattern: str) -> float:
        return self.fio(["--ioengine=libaio", f"--filename={self.device(mode)}"], pattern)

    def baseline(self, mode: str, pattern: str) -> float:
        return self.fio(["--ioengine=rbd", f"--clientname={CLIENT}", f"--pool={POOL}", f"--rbdname={image(mode)}"],
                        pattern, env=f"CEPH_CONF={shlex.quote(self.conf)} ")


LAST = f"datapath-{MODES[-1]}-{list(PATTERNS)[-1]}"


def register(mode: str, pattern: str) -> None:
    name = f"datapath-{mode}-{pattern}"

    def run(ctx: Ctx) -> Result:
        lab = ctx.shared.get("datapath", Lab.start)
        ctx.shared.get(f"datapath-{mode}", lambda _: lab.device(mode))  # a failed map fails this mode's rows only
        try:
            return compare(name, "fio rbd engine", ctx.runs, lambda: lab.ours(mode, pattern),
                           lambda: lab.baseline(mode, pattern))
        finally:
            if name == LAST:  # the VM's TCG and its Ceph would weigh on the benches after these
                lab.close()

    run.__doc__ = f"fio {pattern} on the {mode} device in the kernel VM vs fio's rbd engine there, same image"
    bench(name, runs=RUNS[mode])(run)


for _mode in MODES:
    for _pattern in PATTERNS:
        register(_mode, _pattern)
