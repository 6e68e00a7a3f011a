"""A Debian bookworm root for dpkg tests, made by debootstrap and cached.

dpkg must never install our package onto this host's / (the tests run from a
venv that would then see a second copy of the modules), so the package test
installs into a chroot. Two cached layers under CACHE, each built by this code
on a fresh machine and renamed into place only when complete:
- `bookworm-base/`: `debootstrap --variant=minbase` (about 3 min, network);
- `bookworm-<hash>/`: a copy of it with a package's Depends installed by
  `apt-get satisfy` (the hash is of that Depends line, so a changed
  dependency list makes a new one).
Each test works in an overlay over the cached root (`overlay`), so the cache
is never changed by a test. There is no systemd in a chroot: a policy-rc.d
keeps maintainer scripts from starting services.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator

CACHE = os.environ.get("GANETI_CEPH_TEST_CACHE", "/var/cache/ganeti-ceph-test")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BUILD_TIMEOUT = 1800.0  # debootstrap, then the dependencies' download and unpack
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
POLICY_RC_D = "#!/bin/sh\n# no daemons start in this test chroot\nexit 101\n"


def missing_tools() -> list[str]:
    """Host tools a chroot test needs and this machine lacks (the reason to skip)."""
    return [t for t in ("debootstrap", "chroot", "dpkg-deb", "mount") if not shutil.which(t, path=ENV["PATH"])]


def host(*argv: str, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess:
    """`argv` on this host with a clean environment (Debian's tools first, no venv); bounded."""
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ENV, check=False)
    if check and res.returncode:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout}{res.stderr[-4000:]}")
    return res


def _sh(argv: list[str], timeout: float = BUILD_TIMEOUT) -> str:
    return host(*argv, timeout=timeout).stdout


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time per cached root (another test run may build it too)."""
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, f".{name}.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def base() -> str:
    """The cached minbase root, made by debootstrap if absent."""
    root = os.path.join(CACHE, f"{SUITE}-base")
    with _locked(f"{SUITE}-base"):
        if not os.path.isdir(root):
            tmp = root + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            _sh(["debootstrap", "--variant=minbase", SUITE, tmp, MIRROR])
            with open(os.path.join(tmp, "usr/sbin/policy-rc.d"), "w") as fh:
                fh.write(POLICY_RC_D)
            os.chmod(os.path.join(tmp, "usr/sbin/policy-rc.d"), 0o755)
            os.rename(tmp, root)
    return root


def with_depends(depends: str) -> str:
    """The cached root with `depends` (a Depends field) installed, built from base() if absent."""
    tag = hashlib.sha256(depends.encode()).hexdigest()[:12]
    root = os.path.join(CACHE, f"{SUITE}-{tag}")
    src = base()
    with _locked(f"{SUITE}-{tag}"):
        if not os.path.isdir(root):
            tmp = root + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            _sh(["cp", "-a", "--reflink=auto", src, tmp])
            with mounted_proc(tmp):
                _sh(["chroot", tmp, "apt-get", "update", "-q"])
                _sh(["chroot", tmp, "apt-get", "satisfy", "-y", "-q", "--no-install-recommends", depends])
                _sh(["chroot", tmp, "apt-get", "clean"])
            with open(os.path.join(tmp, ".depends"), "w") as fh:
                fh.write(depends + "\n")
            os.rename(tmp, root)
    return root


@contextlib.contextmanager
def mounted_proc(root: str) -> Iterator[None]:
    """/proc inside the chroot while maintainer scripts run (some read it)."""
    proc = os.path.join(root, "proc")
    _sh(["mount", "-t", "proc", "proc", proc], 60)
    try:
        yield
    finally:
        _sh(["umount", "-l", proc], 60)


@contextlib.contextmanager
def overlay(lower: str, work: str) -> Iterator[str]:
    """A writable view of `lower` whose changes go to `work` (a tmp dir), with /proc mounted."""
    upper, wdir, merged = (os.path.join(work, d) for d in ("upper", "work", "root"))
    for d in (upper, wdir, merged):
        os.makedirs(d, exist_ok=True)
    _sh(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={wdir}", merged], 60)
    try:
        with mounted_proc(merged):
            yield merged
    finally:
        _sh(["umount", merged], 60)


def run(root: str, *argv: str, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess:
    """`argv` inside the chroot, as root, with a clean environment."""
    return host("chroot", root, *argv, timeout=timeout, check=check)


if __name__ == "__main__":  # warm the cache by hand: python -m tests.packaging.chroot
    print(base())
