"""`ganeti-ceph-setup install|remove`: the `rbd` provider and the hooks, where Ganeti looks.

Writes `<dir>/rbd/` with one script and a link per action (Ganeti accepts
symlinks), plus parameters.list, and creates /var/log/ganeti/extstorage,
which Ganeti 3.0.2 needs but never creates. The script runs the Python that
ran this command, in isolated mode (-I), so PYTHONPATH and friends from
noded's inherited environment cannot change what runs; and it refuses to
install from a path that anyone but root could change (`untrusted`).
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import stat
import sys

from extstorage import agent
from extstorage.request import ACTIONS, parameters_list
from ganeti_ceph import atomic
from ganeti_ceph.errors import ArgumentParser, UsageError, run_main

DEFAULT_DIR = "/usr/local/lib/ganeti/extstorage"
SEARCH_PATH = ("/srv/ganeti/extstorage", "/usr/local/lib/ganeti/extstorage", "/usr/lib/ganeti/extstorage",
               "/usr/share/ganeti/extstorage")
LOG_DIR = "/var/log/ganeti/extstorage"
PROVIDER = "rbd"
SCRIPT = "ganeti-ceph-rbd"
MARKER = "# ganeti-ceph provider"
DEFAULT_HOOKS_DIR = "/etc/ganeti/hooks"
HOOK_NAME = "50-ganeti-ceph"  # Ganeti runs hooks matching ^[a-zA-Z0-9_-]+$ in lexical order
HOOK_SCRIPT = "ganeti-ceph-hook"  # the one program behind every link (not itself in a *.d dir)
VERIFY_HOOK = "60-ganeti-ceph-health"  # cluster-verify-post.d: Ceph's health in gnt-cluster verify
HOOKS = (("instance-start", "pre"), ("instance-migrate", "pre"), ("instance-failover", "pre"),
         ("instance-stop", "post"), ("instance-remove", "post"), ("instance-migrate", "post"),
         ("instance-failover", "post"), ("node-add", "post"), ("disk-grow", "post"),
         # Project quotas (the catalogue's projects), on the master.
         ("instance-add", "pre"), ("disk-grow", "pre"),
         # The storage group's node lifecycle (gnt_storage.deploy.lifecycle).
         ("node-modify", "pre"), ("node-modify", "post"), ("node-remove", "pre"), ("node-remove", "post"))


def script_text(python: str, path: list[str], module: str = "extstorage.client", func: str = "main",
                missing_ok: bool = False) -> str:
    """`-IS`: no site import (its .pth scan costs more than some actions) and
    nothing from the environment; the module path is fixed at install time.
    `missing_ok`: with its package gone the script does nothing and exits 0 (the verify hook: dpkg keeps
    it, a conffile, after `apt remove`, and a failing script would fail every gnt-cluster verify)."""
    head = (f"#!{python} -IS\n{MARKER}: the action is the name this file is run as.\n"
            f"import sys\n\nsys.path[:0] = {path!r}\n")
    if not missing_ok:
        return head + f"from {module} import {func}  # noqa: E402\n\n{func}()\n"
    package = module.split(".")[0]
    return head + (f"try:\n    from {module} import {func}\nexcept ModuleNotFoundError as exc:\n"
                   f"    if exc.name not in ({package!r}, {module!r}):\n        raise\n"
                   f"    sys.exit(0)  # {package} was removed (apt remove): nothing to check\n\n{func}()\n")


def install_hooks(hooks_dir: str, python: str, path: list[str] | None = None, destdir: str = "") -> list[str]:
    """One script, linked into every hook path it serves (name: HOOK_NAME),
    plus the Ceph health line of `gnt-cluster verify` (data_collector).
    A package build (packaging/stage.py) gives the scripts' module `path` and
    writes under `destdir`, while the links still name `hooks_dir`."""
    path = module_path() if path is None else path
    check_trusted(python, path)
    script = os.path.join(hooks_dir, HOOK_SCRIPT)
    hooks_dir = destdir + hooks_dir
    os.makedirs(hooks_dir, mode=0o755, exist_ok=True)
    _write_executable(destdir + script, script_text(python, path, "hooks.main", "entry"))
    verify_dir = os.path.join(hooks_dir, "cluster-verify-post.d")
    os.makedirs(verify_dir, mode=0o755, exist_ok=True)
    _write_executable(os.path.join(verify_dir, VERIFY_HOOK),
                      script_text(python, path, "data_collector.verify_hook", "entry", missing_ok=True))
    done = [os.path.join(verify_dir, VERIFY_HOOK)]
    for hpath, phase in HOOKS:
        d = os.path.join(hooks_dir, f"{hpath}-{phase}.d")
        os.makedirs(d, mode=0o755, exist_ok=True)
        link = os.path.join(d, HOOK_NAME)
        atomic.symlink(script, link)
        done.append(link)
    return done


def remove_hooks(hooks_dir: str) -> int:
    removed = 0
    verify = os.path.join(hooks_dir, "cluster-verify-post.d", VERIFY_HOOK)
    if os.path.exists(verify) and MARKER in open(verify).read(512):  # noqa: SIM115
        os.unlink(verify)
        removed += 1
    for hpath, phase in HOOKS:
        link = os.path.join(hooks_dir, f"{hpath}-{phase}.d", HOOK_NAME)
        if os.path.islink(link) and os.readlink(link) == os.path.join(hooks_dir, HOOK_SCRIPT):
            os.unlink(link)
            removed += 1
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(hooks_dir, HOOK_SCRIPT))
    return removed


def _write_executable(path: str, text: str) -> None:
    atomic.write(path, text, 0o755)


def module_path() -> list[str]:
    """Where our package and its dependencies (rados, rbd, yaml) are found now."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [root, *(p for p in sys.path if p and os.path.isdir(p) and p != root)]


def _chain(path: str) -> list[str]:
    """`path` and every directory above it, as resolved (what loads) and as written."""
    found: list[str] = []
    for start in (os.path.realpath(path), os.path.abspath(path)):
        p = start
        while p not in found:
            found.append(p)
            p = os.path.dirname(p)
    return found


def untrusted(path: str) -> str | None:
    """Why someone but root (or the installing user) could change what `path`
    holds, or None. Ganeti runs the scripts as root with this path first."""
    for p in _chain(path):
        try:
            st = os.lstat(p)
        except OSError as exc:
            return f"{p} cannot be checked ({exc.strerror})"
        if st.st_uid not in (0, os.geteuid()):
            return f"{p} is owned by uid {st.st_uid}"
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022:
            return f"{p} is writable by its group or by everyone (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def check_trusted(python: str, paths: list[str]) -> None:
    """Refuse to install scripts that would run, as root, code others can change."""
    for path in (python, *paths):
        why = untrusted(path)
        if why:
            raise UsageError(f"refusing to install: the scripts would run {path} as root, but {why}; "
                             "install from a root-owned checkout or virtualenv that only root can write")


def install(base: str, python: str, log_dir: str = LOG_DIR, path: list[str] | None = None) -> str:
    """`path`: the scripts' module path (a package build gives the system's; default: where this runs from)."""
    target = os.path.join(base, PROVIDER)
    if os.path.exists(target) and not _is_ours(target):
        raise UsageError(f"{target} exists and is not a ganeti-ceph provider; move it away first")
    path = module_path() if path is None else path
    check_trusted(python, path)
    os.makedirs(target, mode=0o755, exist_ok=True)
    _write_executable(os.path.join(target, SCRIPT), script_text(python, path))
    for action in ACTIONS:
        atomic.symlink(SCRIPT, os.path.join(target, action))  # never missing while Ganeti may call it
    atomic.write(os.path.join(target, "parameters.list"), parameters_list())
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
    parser = ArgumentParser(prog="ganeti-ceph-setup", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "remove"))
    parser.add_argument("--extstorage-dir", default=DEFAULT_DIR,
                        help=f"one of Ganeti's ExtStorage search paths (default {DEFAULT_DIR})")
    parser.add_argument("--hooks-dir", default=DEFAULT_HOOKS_DIR,
                        help=f"Ganeti's hooks directory (default {DEFAULT_HOOKS_DIR})")
    parser.add_argument("--no-hooks", action="store_true", help="only the provider, not the KVM access hooks")
    args = parser.parse_args(argv)
    if args.extstorage_dir not in SEARCH_PATH:
        print(f"ganeti-ceph-setup: note: {args.extstorage_dir} is not in Ganeti's default search path",
              file=sys.stderr)
    if args.action == "install":
        print(f"installed provider {PROVIDER} in {install(args.extstorage_dir, sys.executable)}")
        if not args.no_hooks:
            links = install_hooks(args.hooks_dir, sys.executable)
            print(f"installed hook {HOOK_NAME} in {len(links)} hook paths under {args.hooks_dir}")
        if agent.restart_if_running():
            print("restarted ganeti-ceph-agent: it runs the code just installed")
    else:
        gone = remove(args.extstorage_dir)
        print(f"provider {PROVIDER} {'removed from' if gone else 'was not in'} {args.extstorage_dir}")
        if not args.no_hooks:
            print(f"removed hook {HOOK_NAME} from {remove_hooks(args.hooks_dir)} hook paths")
    return 0


def entry() -> None:
    run_main("ganeti-ceph-setup", main)
