"""A real Debian kernel for the tests: Debian's own linux-image and busybox-static packages, unpacked.

This machine's kernel has no rbd, nbd or device-mapper module, so whatever
needs one boots Debian's kernel under QEMU (TCG: nested KVM does not boot
Linux here). Nothing is installed on the host: `apt-get download` fetches the
two .debs (the kernel `linux-image-amd64` points at, and busybox-static for
a tiny /init) and `dpkg-deb -x` unpacks them under a cache keyed by their
versions, so a session fetches them at most once and a fresh machine
rebuilds the cache from Debian's mirror with nothing but this file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Sequence

from ganeti_ceph import runner
from ganeti_ceph.errors import Busy, ToolFailed

CACHE = os.environ.get("GANETI_KERNEL_CACHE", "/var/cache/ganeti-ceph-test/kernel")
META = "linux-image-amd64"  # Debian's metapackage: depends on the current linux-image-<abi>-amd64
BUSYBOX = "busybox-static"
APT_TIMEOUT = 300.0  # a ~70 MiB download from a mirror


@dataclasses.dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel: its image, its modules and a static busybox for an initramfs."""

    version: str  # uname -r of the guest, e.g. 6.1.0-57-amd64
    root: str  # where the kernel package was unpacked

    @property
    def vmlinuz(self) -> str:
        return os.path.join(self.root, "boot", f"vmlinuz-{self.version}")

    @property
    def modules(self) -> str:
        return os.path.join(self.root, "lib", "modules", self.version)

    @property
    def busybox(self) -> str:
        return os.path.join(os.path.dirname(self.root), "busybox", "bin", "busybox")

    def module(self, name: str) -> str:
        """The path of module `name` (e.g. "rbd"); Debian ships them uncompressed in 6.1."""
        want = re.sub("[-_]", "[-_]", name)
        for path in glob.glob(os.path.join(self.modules, "kernel", "**", "*.ko*"), recursive=True):
            if re.fullmatch(want + r"\.ko(\.xz|\.zst)?", os.path.basename(path)):
                return path
        raise ToolFailed(f"kernel {self.version} has no module {name}")

    def in_load_order(self, wanted: Sequence[str]) -> list[tuple[str, str]]:
        """(name, path) of `wanted` and the modules they depend on, each after its dependencies: the order a
        busybox init must insmod them in (it has no modprobe data)."""
        order: dict[str, str] = {}

        def add(name: str) -> None:
            if name not in order:
                path = self.module(name)
                for dep in _depends(path):
                    add(dep)
                order[name] = path

        for name in wanted:
            add(name)
        return list(order.items())


def _depends(path: str) -> list[str]:
    """The modules `path` needs loaded first (its modinfo `depends=`)."""
    with open(path, "rb") as fh:
        found = re.search(rb"\0depends=([^\0]*)\0", fh.read())
    return [d for d in (found.group(1).decode().split(",") if found else []) if d]


def candidate(package: str) -> str:
    """The version apt would fetch of `package` (what the cache is keyed by)."""
    out = runner.run(["apt-cache", "policy", package], f"ask apt for {package}", 60)
    found = re.search(r"Candidate:\s*(\S+)", out)
    if not found or found.group(1) == "(none)":
        raise ToolFailed(f"apt knows no {package}: run apt-get update")
    return found.group(1)


def abi_package() -> str:
    """linux-image-<abi>-amd64, the package the metapackage depends on."""
    out = runner.run(["apt-cache", "depends", META], f"ask apt for {META}", 60)
    found = re.search(r"Depends:\s*(linux-image-\S+-amd64)", out)
    if not found:
        raise ToolFailed(f"{META} depends on no linux-image package")
    return found.group(1)


def _locked(cache: str) -> contextlib.AbstractContextManager[None]:
    """One fetcher at a time: two sessions may want the same kernel."""
    path = os.path.join(cache, ".lock")
    return runner.held(path, 2 * APT_TIMEOUT + 60, f"pid {os.getpid()}", lambda holder: Busy(
        f"another test session ({holder}) held {path} longer than two downloads may take"))


def _unpack(package: str, version: str, into: str) -> None:
    """Download `package`=`version` and unpack it into `into` (made atomically: a crash leaves no half tree)."""
    with tempfile.TemporaryDirectory(dir=os.path.dirname(into)) as tmp:
        runner.run(["sh", "-c", f'cd "$1" && exec apt-get download -q "$2={version}"', "sh", tmp, package],
                   f"download {package} {version}", APT_TIMEOUT)
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        tree = os.path.join(tmp, "tree")
        runner.run(["dpkg-deb", "-x", debs[0], tree], f"unpack {package}", 120)
        os.rename(tree, into)


def fetch(cache: str = CACHE) -> Kernel:
    """Debian's current amd64 kernel and busybox-static, unpacked under `cache` (downloaded if not there)."""
    package = abi_package()
    version = package.removeprefix("linux-image-")
    kernel_key = f"{package}_{candidate(package)}"
    busybox_key = f"{BUSYBOX}_{candidate(BUSYBOX)}"
    with _locked(cache):
        for key, name in ((kernel_key, package), (busybox_key, BUSYBOX)):
            if not os.path.isdir(os.path.join(cache, key)):
                _unpack(name, key.split("_", 1)[1], os.path.join(cache, key))
        current = os.path.join(cache, "current")
        os.makedirs(current, exist_ok=True)
        for link, key in (("kernel", kernel_key), ("busybox", busybox_key)):
            path = os.path.join(current, link)
            if os.path.islink(path) and os.readlink(path) != os.path.join("..", key):
                os.unlink(path)
            if not os.path.islink(path):
                os.symlink(os.path.join("..", key), path)
        for old in os.listdir(cache):  # versions apt no longer offers
            if old not in (kernel_key, busybox_key, "current", ".lock") and not old.startswith("tmp"):
                shutil.rmtree(os.path.join(cache, old), ignore_errors=True)
    return Kernel(version, os.path.join(current, "kernel"))
