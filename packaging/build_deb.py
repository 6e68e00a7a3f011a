#!/usr/bin/python3
"""`make deb`: build ganeti-ceph_<version>-<revision>_all.deb from this tree.

    packaging/build_deb.py [--out DIR] [--revision N]

The version is setup.py's: the Debian changelog is written from it into a
copy of the tree (build/deb/src/ganeti-ceph-<version>/), never kept in the
repository, so the package and `pip` cannot disagree (nor `gnt-storage
--version`: tests/packaging checks it). --revision makes the Debian revision (an upgrade test builds N+1).
The build runs dpkg-buildpackage with Debian's tools only (PATH without any
virtualenv or pyenv), so the modules land in /usr/lib/python3/dist-packages.
"""

from __future__ import annotations

import argparse
import email.utils
import glob
import hashlib
import os
import shutil
import subprocess
import sys

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root", "DEB_BUILD_OPTIONS": "nocheck"}
IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "__pycache__", "*.egg-info", ".pytest_cache",
                                ".ruff_cache", ".pybuild", "reliability", "bench", "testbed", "tests")
BUILD_TIMEOUT = 900


def version(src: str) -> str:
    out = subprocess.run(["/usr/bin/python3", "setup.py", "--version"], cwd=src, capture_output=True, text=True,
                         env=ENV, timeout=60, check=True)
    return out.stdout.strip().splitlines()[-1]


def tree_hash(src: str) -> str:
    """A hash of every file the build copies (its path and content): what a cached .deb was built from."""
    digest = hashlib.sha256()
    for top, dirs, files in os.walk(src):
        ignored = IGNORE(top, dirs + files)
        dirs[:] = sorted(d for d in dirs if d not in ignored)
        for name in sorted(f for f in files if f not in ignored):
            path = os.path.join(top, name)
            digest.update(os.path.relpath(path, src).encode() + b"\0")
            with open(path, "rb") as fh:
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def changelog(ver: str, revision: int) -> str:
    return (f"ganeti-ceph ({ver}-{revision}) unstable; urgency=medium\n\n"
            f"  * Built from the ganeti-ceph repository (version from setup.py).\n\n"
            f" -- ganeti-ceph developers <ganeti-ceph@localhost.localdomain>  {email.utils.formatdate()}\n")


def build(src: str, out: str, revision: int) -> str:
    """The path of the built .deb; the copy of the tree is made anew each time."""
    ver = version(src)
    tree = os.path.join(out, "src", f"ganeti-ceph-{ver}")
    shutil.rmtree(os.path.dirname(tree), ignore_errors=True)
    shutil.copytree(src, tree, ignore=IGNORE, symlinks=True)
    with open(os.path.join(tree, "debian", "changelog"), "w", encoding="utf-8") as fh:
        fh.write(changelog(ver, revision))
    res = subprocess.run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=tree, env=ENV, capture_output=True,
                         text=True, timeout=BUILD_TIMEOUT)
    with open(os.path.join(out, "build.log"), "w", encoding="utf-8") as fh:
        fh.write(res.stdout + res.stderr)
    if res.returncode:
        sys.exit(f"build_deb: dpkg-buildpackage failed (exit {res.returncode}); see {out}/build.log:\n"
                 + "\n".join((res.stdout + res.stderr).splitlines()[-25:]))
    name = f"ganeti-ceph_{ver}-{revision}_all.deb"
    for made in glob.glob(os.path.join(out, "src", f"ganeti-ceph_{ver}-{revision}_*")):
        shutil.move(made, os.path.join(out, os.path.basename(made)))
    return os.path.join(out, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_deb", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(SRC, "build", "deb"), help="build directory (default build/deb)")
    parser.add_argument("--revision", type=int, default=1, help="Debian revision (default 1)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    print(build(SRC, os.path.abspath(args.out), args.revision))
    return 0


if __name__ == "__main__":
    sys.exit(main())
