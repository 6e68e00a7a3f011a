"""Drive a test guest's shell on its serial console (QEMU's unix socket), keeping a transcript.

The guest's /sbin/init (testbed.guest_image) evaluates one line at a time
read from ttyS0. Each command is sent wrapped in markers the tty's echo
cannot fake (`echo @B$((n))@` prints @Bn@ only when run), so its output
and exit code are found in the stream whatever the kernel prints in
between. Every byte read, and a line for each step, goes to the transcript
file: it is the proof of what the guest did. Every read is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Iterator

PROBE_EVERY = 3.0  # s between "are you there" lines while the guest boots


class ConsoleError(AssertionError):
    """The guest did not answer as expected (the message carries the transcript's tail)."""


class Console:
    """One guest's console, re-attachable (after a migration or a restart), one transcript for all."""

    def __init__(self, transcript: str) -> None:
        self.transcript = transcript
        self.sock: socket.socket | None = None
        self.buf = ""
        self.count = 0

    def note(self, text: str) -> None:
        """A step header in the transcript, so a reader sees which test did what."""
        self._log(f"\n##### {time.strftime('%H:%M:%S')} {text}\n")

    def _log(self, text: str) -> None:
        with open(self.transcript, "a", encoding="utf-8", errors="replace") as fh:
            fh.write(text)

    def attach(self, path: str, timeout: float = 30.0) -> None:
        """Connect to QEMU's serial socket at `path` (it may not exist yet: QEMU is starting)."""
        self.close()
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(path)
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise self._fail(f"cannot connect to {path}: {exc.strerror}") from None
                time.sleep(0.2)
        self.sock, self.buf = sock, ""
        self.note(f"attached to {path}")

    def close(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None

    def tail(self, lines: int = 40) -> str:
        try:
            with open(self.transcript, encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return "(no transcript)"

    def _fail(self, what: str) -> ConsoleError:
        return ConsoleError(f"{what}\n--- console transcript {self.transcript}, last lines:\n{self.tail()}")

    def _read_until(self, pattern: re.Pattern[str], deadline: float) -> tuple[re.Match[str] | None, str]:
        """Read until `pattern` matches the unread buffer or the deadline passes: (the match or None, what came
        before it); the buffer is consumed up to the match's end."""
        assert self.sock, "attach() first"
        while True:
            found = pattern.search(self.buf)
            if found:
                before, self.buf = self.buf[:found.start()], self.buf[found.end():]
                return found, before
            left = deadline - time.monotonic()
            if left <= 0:
                return None, self.buf
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise self._fail("the console closed (QEMU stopped?)")
            text = data.decode("utf-8", errors="replace").replace("\r", "")
            self._log(text)
            self.buf += text

    def _send(self, command: str) -> int:
        assert self.sock, "attach() first"
        self.count += 1
        self.sock.sendall(f"echo @B$(({self.count}))@; {command}; echo @E$(({self.count})):$?\n".encode())
        return self.count

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> str:
        """Run one shell line in the guest; its output (the exit code must be 0 when `check`)."""
        n = self._send(command)
        deadline = time.monotonic() + timeout
        if not self._read_until(re.compile(rf"@B{n}@\n"), deadline)[0]:
            raise self._fail(f"the guest did not start {command!r} within {timeout:.0f} s")
        found, output = self._read_until(re.compile(rf"@E{n}:(\d+)\n"), deadline)
        if not found:
            raise self._fail(f"{command!r} did not finish within {timeout:.0f} s")
        if check and found.group(1) != "0":
            raise self._fail(f"{command!r} exited {found.group(1)} in the guest:\n{output}")
        return output.strip()

    def wait_shell(self, timeout: float) -> float:
        """Probe until the guest's shell answers (it is booting); seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            n = self._send("true")
            if self._read_until(re.compile(rf"@E{n}:0\n"), min(deadline, time.monotonic() + PROBE_EVERY))[0]:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise self._fail(f"no shell on the console after {timeout:.0f} s")

    @contextlib.contextmanager
    def shown_on_failure(self) -> Iterator[None]:
        """Print the transcript's tail if the block fails (pytest shows it with the failure)."""
        try:
            yield
        except BaseException:
            print(f"--- console transcript {self.transcript}, last lines:\n{self.tail(60)}")
            raise


def serial_socket(holder_pid: int, instance: str) -> str:
    """Ganeti's serial socket of `instance` inside the node whose namespace holder is `holder_pid`, reachable
    from the host through /proc/<pid>/root (/run, not /var/run: an absolute link would leave the node's root)."""
    return os.path.join(f"/proc/{holder_pid}/root", "run/ganeti/kvm-hypervisor/ctrl", f"{instance}.serial")
