"""The backstop of every provider action and hook: Ganeti waits for neither.

Each Ceph call is bounded by its own timeout, but a process may make many
of them, or a C call may ignore its bound; `start` ends the whole process
once `timeouts.action` has passed, with one line saying so.
"""

from __future__ import annotations

import os
import sys
import threading
import time

EXIT_CODE = 4  # as CephUnavailable: the work could not finish in time


def start(seconds: float, prog: str) -> None:
    """End the process after `seconds` (a daemon thread), printing `<prog>: did not finish ...`."""
    def fire() -> None:
        time.sleep(seconds)
        print(f"{prog}: did not finish within {seconds:.0f} s (timeouts.action); giving up", file=sys.stderr,
              flush=True)
        os._exit(EXIT_CODE)

    threading.Thread(target=fire, daemon=True).start()
