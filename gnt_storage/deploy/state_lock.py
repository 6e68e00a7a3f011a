"""One lock around the master's storage state (storage.json, its admin files, the group's daemons).

init-distributed-storage, remove-distributed-storage and the node lifecycle
hooks each load the state, change the cluster and save the state: run
together, one would write back a copy another just changed or removed, or
re-create what a removal just purged. So each takes this lock for its whole
run. The wait is bounded: past it, one line names the holder (written into
the lock file by whoever holds it).

The file is the state directory's hidden .lock: a removal leaves it (it is
no state), and the directory is the master's own (a test bed's nodes share
/run, not /var/lib/ganeti-ceph).
"""

from __future__ import annotations

import contextlib
import os

from ganeti_ceph import runner
from ganeti_ceph.errors import UsageError
from gnt_storage.deploy.distributed import STATE_DIR

PATH = os.path.join(STATE_DIR, ".lock")
WAIT_S = 120.0  # a hook's step (an offline's drain has its own bound) or a short init finishes; a long init does not
POST_WAIT_S = 600.0  # a post hook cannot undo the change it follows, nor be run again alone: it waits longer


def held(what: str, wait: float | None = None, path: str | None = None, instead: str | None = None
         ) -> contextlib.AbstractContextManager[None]:
    """Hold the lock while `what` (a command or hook, named for waiters) runs; UsageError after `wait`
    (default WAIT_S), which says to run `what` again, or `instead` (for what cannot be run alone)."""
    path, wait = path or PATH, WAIT_S if wait is None else wait

    def busy(holder: str) -> UsageError:
        return UsageError(f"the storage cluster is busy: {holder or 'another process'} holds {path} (waited "
                          f"{wait:.0f} s); " + (instead or f"run {what} again once it has finished"))

    return runner.held(path, wait, f"{what} (pid {os.getpid()})", busy)
