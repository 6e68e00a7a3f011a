"""`ganeti-ceph-setup install|remove`: put the `rbd` provider where Ganeti looks.

Writes `<dir>/rbd/` with one script and a link per action (Ganeti accepts
symlinks), plus parameters.list, and creates /var/log/ganeti/extstorage,
which Ganeti 3.0.2 needs but never creates. The script runs the Python that
ran this command, in isolated mode (-I), so PYTHONPATH and friends from
noded's inherited environment cannot change what runs.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import shutil
import sys

from extstorage.request import ACTIONS, parameters_list
from ganeti_ceph.errors import UsageError, run_main

DEFAULT_DIR = "/usr/local/lib/ganeti/extstorage"
SEARCH_PATH = ("/srv/ganeti/extstorage", "/usr/local/lib/ganeti/extstorage", "/usr/lib/ganeti/extstorage",
               "/usr/share/ganeti/extstorage")
LOG_DIR = "/var/log/ganeti/extstorage"
PROVIDER = "rbd"
SCRIPT = "ganeti-ceph-rbd"
MARKER = "# ganeti-ceph provider"


def script_text(python: str, path: list[str]) -> str:
    """`-IS`: no site import (its .pth scan costs more than some actions) and
    nothing from the environment; the module path is fixed at install time."""
    return (f"#!{python} -IS\n{MARKER}: the action is the name this file is run as.\n"
            f"import sys\n\nsys.path[:0] = {path!r}\n"
            "from extstorage.client import main  # noqa: E402\n\nmain()\n")


def module_path() -> list[str]:
    """Where our package and its dependencies (rados, rbd, yaml) are found now."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [root, *(p for p in sys.path if p and os.path.isdir(p) and p != root)]


def install(base: str, python: str, log_dir: str = LOG_DIR) -> str:
    target = os.path.join(base, PROVIDER)
    if os.path.exists(target) and not _is_ours(target):
        raise UsageError(f"{target} exists and is not a ganeti-ceph provider; move it away first")
    os.makedirs(target, mode=0o755, exist_ok=True)
    script = os.path.join(target, SCRIPT)
    tmp = script + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(script_text(python, module_path()))
    os.chmod(tmp, 0o755)
    os.replace(tmp, script)
    for action in ACTIONS:
        link = os.path.join(target, action)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(SCRIPT, link)
    with open(os.path.join(target, "parameters.list"), "w") as fh:
        fh.write(parameters_list())
    os.makedirs(log_dir, mode=0o750, exist_ok=True)
    with contextlib.suppress(KeyError):
        os.chown(log_dir, 0, grp.getgrnam("gnt-daemons").gr_gid)
    return target


def remove(base: str) -> bool:
    target = os.path.join(base, PROVIDER)
    if not os.path.exists(target):
        return False
    if not _is_ours(target):
        raise UsageError(f"{target} is not a ganeti-ceph provider; not removing it")
    shutil.rmtree(target)
    return True


def _is_ours(target: str) -> bool:
    try:
        with open(os.path.join(target, SCRIPT)) as fh:
            return MARKER in fh.read(512)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganeti-ceph-setup", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "remove"))
    parser.add_argument("--extstorage-dir", default=DEFAULT_DIR,
                        help=f"one of Ganeti's ExtStorage search paths (default {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    if args.extstorage_dir not in SEARCH_PATH:
        print(f"ganeti-ceph-setup: note: {args.extstorage_dir} is not in Ganeti's default search path",
              file=sys.stderr)
    if args.action == "install":
        print(f"installed provider {PROVIDER} in {install(args.extstorage_dir, sys.executable)}")
    else:
        gone = remove(args.extstorage_dir)
        print(f"provider {PROVIDER} {'removed from' if gone else 'was not in'} {args.extstorage_dir}")
    return 0


def entry() -> None:
    run_main("ganeti-ceph-setup", main)
