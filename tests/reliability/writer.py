"""The verifying writer: a checksummed log whose every acknowledged record is checked afterwards.

Each record is one 4 KiB block at offset `seq * 4096`: magic, salt (one per
writer run, so a stale log never passes for a fresh one), seq, a payload
derived from both, and a SHA-256 over all of it. A record is acknowledged
only once it is durable by the contract of its path:

- kernelspace (`device`): pwrite with O_DIRECT from an aligned buffer, then
  fsync, as a guest's flush would; `device-noflush` acknowledges when the
  O_DIRECT write returns (doc/extstorage.md: an acknowledged write is in
  Ceph, flushed or not).
- userspace (`rbd`): librbd `write` then `flush`, as QEMU does. The session
  has no op timeouts, like QEMU's: I/O waits out a fault instead of failing.

The writer runs as its own process (a hung write must not hang the tests)
and prints each acknowledged seq on stdout; the parent (`Writer`) collects
them and `lost()` reads the image back through librbd.

    python -m tests.reliability.writer device|device-noflush DEV SALT FIRST COUNT
    python -m tests.reliability.writer rbd CONF KEYRING ID POOL IMAGE SALT FIRST COUNT
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

BLOCK = 4096
MAGIC = b"GCRELLOG"
HEAD = struct.Struct(">8sQQ")  # magic, salt, seq
PR_SET_PDEATHSIG = 1
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def record(salt: int, seq: int) -> bytes:
    head = HEAD.pack(MAGIC, salt, seq)
    payload = hashlib.shake_256(head).digest(BLOCK - HEAD.size - 32)
    return head + payload + hashlib.sha256(head + payload).digest()


def parse(block: bytes) -> tuple[int, int] | None:
    """(salt, seq) of an intact record, else None."""
    if len(block) != BLOCK or not block.startswith(MAGIC):
        return None
    if hashlib.sha256(block[:-32]).digest() != block[-32:]:
        return None
    _, salt, seq = HEAD.unpack_from(block)
    return salt, seq


# -- the writer process -----------------------------------------------------------

def _device_writes(dev: str, flush: bool = True) -> Iterator[Callable[[int, bytes], None]]:
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs

    def write(offset: int, data: bytes) -> None:
        buf[:] = data
        if os.pwritev(fd, [buf], offset) != BLOCK:
            raise OSError("short write")
        if flush:
            os.fsync(fd)

    try:
        yield write
    finally:
        os.close(fd)


def _rbd_writes(conf: str, keyring: str, client: str, pool: str, image: str) -> Iterator[Callable[[int, bytes], None]]:
    import rados
    import rbd

    cluster = rados.Rados(conffile=conf, rados_id=client, conf={"keyring": keyring, "log_to_stderr": "false",
                                                                   "log_file": ""})
    cluster.connect()
    try:
        with cluster.open_ioctx(pool) as io, rbd.Image(io, image) as img:
            def write(offset: int, data: bytes) -> None:
                img.write(data, offset)
                img.flush()

            yield write
    finally:
        cluster.shutdown()


def main(argv: list[str]) -> int:
    kind, *args = argv
    # Die with the test process: a writer blocked in librbd on a cluster that is gone ignores SIGTERM.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    gen = _device_writes(args[0], kind == "device") if kind.startswith("device") else _rbd_writes(*args[:5])
    salt, first, count = (int(x) for x in args[-3:])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    write = next(gen)
    try:
        for seq in range(first, first + count):
            if stop.is_set():
                break
            write(seq * BLOCK, record(salt, seq))
            print(seq, flush=True)
            time.sleep(0.002)  # leave the shared CPUs to the cluster
    except OSError as exc:
        print(f"write error: {exc}", file=sys.stderr, flush=True)
        return 3
    finally:
        with contextlib.suppress(Exception):
            gen.close()
    return 0


# -- the parent side -----------------------------------------------------------------

class Writer:
    """One writer process and the seqs it acknowledged."""

    def __init__(self, argv: list[str], salt: int, first: int, count: int) -> None:
        self.salt = salt
        self.first = first
        self.acked: list[int] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.writer", *argv, str(salt), str(first),
                                      str(count)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        self.stderr = ""
        self._out = threading.Thread(target=self._read, daemon=True)
        self._out.start()

    @classmethod
    def device(cls, dev: str, salt: int, first: int = 0, count: int = 1 << 20, flush: bool = True) -> Writer:
        """Without `flush`, a record counts as acknowledged when its O_DIRECT write returns: the
        contract doc/extstorage.md gives every mapper (no volatile cache)."""
        return cls(["device" if flush else "device-noflush", dev], salt, first, count)

    @classmethod
    def rbd(cls, conf: str, keyring: str, client: str, pool: str, image: str, salt: int, first: int = 0,
            count: int = 1 << 20) -> Writer:
        return cls(["rbd", conf, keyring, client, pool, image], salt, first, count)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.acked.append(int(line))

    def wait_for(self, n: int, timeout: float) -> bool:
        """True once `n` more records than now are acknowledged (within `timeout`)."""
        goal = len(self.acked) + n
        deadline = time.monotonic() + timeout
        while len(self.acked) < goal and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.05)
        return len(self.acked) >= goal

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 30.0) -> int:
        """End the writer (TERM, then KILL after `grace`); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self._out.join(10)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        return self.proc.returncode

    def lost(self, read: Callable[[int, int], bytes]) -> list[int]:
        """Acknowledged seqs not read back intact; `read(offset, length)` reads the image (librbd)."""
        if not self.acked:
            return []
        lo, hi = min(self.acked), max(self.acked)
        data = b"".join(read(off, min(4 << 20, (hi + 1) * BLOCK - off)) for off in range(lo * BLOCK, (hi + 1) * BLOCK,
                                                                                         4 << 20))
        bad = []
        for seq in self.acked:
            at = (seq - lo) * BLOCK
            if parse(data[at:at + BLOCK]) != (self.salt, seq):
                bad.append(seq)
        return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
