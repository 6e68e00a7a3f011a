"""The one way ganeti-ceph replaces a file or a link: never half-written, never through a planted link.

A fixed `<path>.tmp` can be pre-created by anyone who can write the
directory (a symlink to /etc/shadow, a FIFO) and is shared by two writers at
once; and a rename without fsync can leave an empty file after a crash
(ext4, xfs). So the temporary name is unique, created with O_EXCL and
O_NOFOLLOW at its final mode (a key is never readable by others, not even
for an instant), flushed, renamed over the target, and the directory
flushed so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

SUFFIX = ".tmp"  # listings of link directories skip names ending so


def _temp_name(path: str) -> str:
    head, tail = os.path.split(path)
    # What secrets.token_hex(4) returns, without importing hashlib into every provider call.
    return os.path.join(head, f".{tail}.{os.getpid()}.{os.urandom(4).hex()}{SUFFIX}")


def _sync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(path: str, durable: bool = True) -> Iterator[str]:
    """Yield a fresh temporary name beside `path`; rename it over `path` after
    the body, or remove it if the body (or the rename) fails."""
    tmp = _temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _sync_dir(path)


def write(path: str, data: str | bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `path` with `data` (str is UTF-8), mode `mode`, durably unless `durable` is False
    (a file that only has to last as long as its process: no flush to disk)."""
    raw = data.encode() if isinstance(data, str) else data
    with _replacing(path, durable) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # whatever the umask took away
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)


def symlink(target: str, link: str) -> None:
    """Point `link` at `target` in one step: readers see the old link or the new one."""
    with _replacing(link) as tmp:
        os.symlink(target, tmp)
