"""Progress and diagnostics on stderr, in Ganeti's job-feedback style.

stdout stays free for results (attach prints its device there); progress
lines look like Ganeti's: "Sat Nov 21 12:00:00 2026 * step...".
"""

from __future__ import annotations

import sys
import time


def progress(message: str) -> None:
    """One line of progress for a long operation."""
    stamp = time.strftime("%a %b %e %H:%M:%S %Y")
    print(f"{stamp} * {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)
