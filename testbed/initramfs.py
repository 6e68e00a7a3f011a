"""A gzip'd newc cpio archive, written in Python: the initramfs of a test kernel.

Kept to what a busybox /init needs: directories, regular files (from the
host or given as bytes, with a mode) and symlinks. Entries are written in
sorted order with fixed times and owners, so the same inputs give the same
archive (a cache can key on its hash).
"""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Mapping

Source = str | bytes | tuple[bytes, int]  # a host path, content (mode 0644), or (content, mode)
TRAILER = "TRAILER!!!"


def _header(name: str, mode: int, size: int, ino: int, nlink: int = 1) -> bytes:
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
    return head + b"\0" * (-len(head) % 4)


def _entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    return _header(name, mode, len(data), ino, 2 if stat.S_ISDIR(mode) else 1) + data + b"\0" * (-len(data) % 4)


def _content(src: Source) -> tuple[int, bytes]:
    """(mode, bytes) of one file: a host path keeps its mode, or a symlink stays a symlink."""
    if isinstance(src, tuple):
        return stat.S_IFREG | src[1], src[0]
    if isinstance(src, bytes):
        return stat.S_IFREG | 0o644, src
    if os.path.islink(src) and not os.path.isabs(os.readlink(src)):
        return stat.S_IFLNK | 0o777, os.readlink(src).encode()
    with open(src, "rb") as fh:
        return stat.S_IFREG | stat.S_IMODE(os.stat(src).st_mode), fh.read()


def pack(files: Mapping[str, Source], symlinks: Mapping[str, str] | None = None) -> bytes:
    """The archive of `files` (path in the archive -> source) and `symlinks` (path -> target);
    parent directories are added as needed (mode 0755)."""
    entries: dict[str, tuple[int, bytes]] = {}
    for path, src in files.items():
        entries[path.strip("/")] = _content(src)
    for path, target in (symlinks or {}).items():
        entries[path.strip("/")] = (stat.S_IFLNK | 0o777, target.encode())
    for path in list(entries):
        parent = os.path.dirname(path)
        while parent and parent not in entries:
            entries[parent] = (stat.S_IFDIR | 0o755, b"")
            parent = os.path.dirname(parent)
    out = bytearray()
    for ino, path in enumerate(sorted(entries), start=1):
        mode, data = entries[path]
        out += _entry(path, mode, data, ino)
    out += _entry(TRAILER, 0, b"", 0)
    return gzip.compress(bytes(out), mtime=0)


def write(path: str, files: Mapping[str, Source], symlinks: Mapping[str, str] | None = None) -> str:
    """pack() into `path` atomically; returns `path`."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(pack(files, symlinks))
    os.replace(tmp, path)
    return path
