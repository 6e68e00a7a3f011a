"""Ganeti's state directory on this node: the ssconf files and where the directory is.

ssconf is Ganeti's own node-local, stable interface (one value or one
"name value" pair a line, on every node); the directory is LOCALSTATEDIR/lib/ganeti
of the Ganeti installed here, /var/lib/ganeti for a packaged one.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable

LIB_DIR = "/var/lib/ganeti"
GANETI_PY = "/usr/share/ganeti/default"  # Ganeti's packaged Python tree (-> /etc/ganeti/share)
# Where an installed Ganeti's Python tree may sit: Debian's package, and a source build's default prefix.
# Its generated constants say where that Ganeti keeps its state (LOCALSTATEDIR/lib/ganeti).
GANETI_TREES = (GANETI_PY, "/usr/local/share/ganeti/default")


def lines(name: str, lib_dir: str = LIB_DIR) -> list[str]:
    """The non-empty lines of ssconf_<name>; none when it is missing or unreadable."""
    try:
        with open(os.path.join(lib_dir, f"ssconf_{name}")) as fh:
            return [line.strip() for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError):
        return []


def value(name: str, lib_dir: str = LIB_DIR) -> str | None:
    """The whole of ssconf_<name>, stripped; None when this node has no such file (not in a cluster)."""
    try:
        with open(os.path.join(lib_dir, f"ssconf_{name}")) as fh:
            return fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def in_cluster(lib_dir: str = LIB_DIR) -> bool:
    """Whether `lib_dir` holds a Ganeti cluster's ssconf (present, readable or not: unreadable is not absent)."""
    return os.path.exists(os.path.join(lib_dir, "ssconf_cluster_name"))


def pairs(text_lines: Iterable[str]) -> list[tuple[str, str]]:
    """(node, ip) from "node ip" lines (ssconf_node_primary_ips, _secondary_ips); others are skipped (pure)."""
    out = []
    for line in text_lines:
        parts = line.split()
        if len(parts) == 2:
            out.append((parts[0], parts[1]))
    return out


def localstatedir(constants_py: str) -> str | None:
    """LOCALSTATEDIR as Ganeti's generated _constants.py sets it (pure: parsed, never imported)."""
    try:
        tree = ast.parse(constants_py)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "LOCALSTATEDIR" and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            return node.value.value
    return None


def state_dirs(lib_dir: str = LIB_DIR, trees: Iterable[str] = GANETI_TREES) -> list[str]:
    """`lib_dir`, then the state dir of every Ganeti installed here, as its own constants name it: a Ganeti
    built with another localstatedir keeps config.data and ssconf elsewhere, and not finding them at the
    usual place must not read as "no Ganeti cluster here"."""
    dirs = [lib_dir]
    for tree in trees:
        try:
            with open(os.path.join(tree, "ganeti", "_constants.py")) as fh:
                var = localstatedir(fh.read(1 << 22))
        except (OSError, UnicodeDecodeError):
            continue
        if var and os.path.join(var, "lib", "ganeti") not in dirs:
            dirs.append(os.path.join(var, "lib", "ganeti"))
    return dirs
