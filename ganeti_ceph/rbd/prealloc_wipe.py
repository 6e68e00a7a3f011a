"""Ganeti's `prealloc_wipe_disks`: the cluster setting that zeroes every disk Ganeti adds.

With it on, Ganeti follows the provider's create with WipeDisks: attach, then
`dd if=/dev/zero oflag=direct of=<device>` over the whole disk, and if that
fails it calls the provider's remove to undo the create. Right for a new,
empty image; it destroys the data of an adopted image (`adopt_image=`, the
access switch) or of a clone (`origin=`). In userspace mode attach gives no
device and Ganeti 3.0 runs dd with `of=None`: the zeros go to a file `None`
in ganeti-noded's working directory, `/` (seen on the test bed), so the
image survives by accident. Ganeti tells the provider nothing of the setting;
it is in config.data, which only the master and the master candidates hold.
Elsewhere (Ganeti keeps at most candidate_pool_size candidates) we ask
ganeti-confd on the candidates, with Ganeti's own confd client, bounded.
See doc/extstorage.md and doc/access-switch.md.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from ganeti_ceph.errors import UsageError

GANETI_LIB = "/var/lib/ganeti"
OFF = "gnt-cluster modify --prealloc-wipe-disks no"
GANETI_PY = "/usr/share/ganeti/default"  # Ganeti's packaged Python tree (-> /etc/ganeti/share)
# Where an installed Ganeti's Python tree may sit: Debian's package, and a source build's default prefix.
# Its generated constants say where that Ganeti keeps its state (LOCALSTATEDIR/lib/ganeti).
GANETI_TREES = (GANETI_PY, "/usr/local/share/ganeti/default")
# Haskell confd's ReqConfigQuery (type 10) takes an RFC 6901 pointer into config.data (Confd/Utils.hs
# extractJSONPath), as Ganeti's tools/query-config sends it.
CONFD_QUERY = "/cluster/prealloc_wipe_disks"
# The whole ask, import included: confd answers in milliseconds; no config timeout is this short, and a
# create should not wait the 10 s of a Ceph connect for an answer that, missing, only means "refuse".
CONFD_BOUND_S = 2.0
CONFD_OK = 0  # ConfdReply status: CONFD_REPL_STATUS_OK


def from_config(cfg: dict) -> bool:
    """The setting in a parsed config.data."""
    return bool((cfg.get("cluster") or {}).get("prealloc_wipe_disks"))


def from_confd(answers: Iterable[tuple[int, object]], needed: int) -> bool | None:
    """The setting from confd's replies (status, answer), one per candidate that answered: conclusive only
    when at least `needed` answered, all with status OK and the same boolean; else None (cannot tell)."""
    answers = list(answers)
    if needed < 1 or len(answers) < needed:
        return None
    if any(status != CONFD_OK or not isinstance(value, bool) for status, value in answers):
        return None
    values = {value for _, value in answers}
    return values.pop() if len(values) == 1 else None


def _ganeti_confd() -> tuple[ModuleType, ModuleType]:
    """Ganeti's confd client and constants, imported only here: its tree is on sys.path only during the
    import (nothing else may pick up Ganeti's modules), and its asyncore DeprecationWarnings stay quiet."""
    saved = list(sys.path)
    sys.path.insert(0, GANETI_PY)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from ganeti import constants  # type: ignore[import-not-found]
            from ganeti.confd import client  # type: ignore[import-not-found]
    finally:
        sys.path[:] = saved
    return client, constants


def ask_confd(lib_dir: str = GANETI_LIB, bound: float = CONFD_BOUND_S) -> bool | None:
    """The setting as ganeti-confd on the master candidates (ssconf_master_candidates_ips, signed with
    hmac.key, which every node has) says it, within `bound` seconds in all; None if it cannot tell."""
    deadline = time.monotonic() + bound
    try:
        with open(os.path.join(lib_dir, "hmac.key")) as fh:
            key = fh.read()
        with open(os.path.join(lib_dir, "ssconf_master_candidates_ips")) as fh:
            peers = fh.read().split()
    except (OSError, UnicodeDecodeError):
        return None
    if not peers or not key:
        return None
    try:  # anything Ganeti's client raises (no route, bad address, ...) only means "cannot tell"
        client, constants = _ganeti_confd()
        req = client.ConfdClientRequest(type=constants.CONFD_REQ_CONFIG_QUERY, query=CONFD_QUERY)
        needed = client.ConfdClient._NeededReplies(len(peers))  # Ganeti's quorum: all of 1-2, all but 1 of 3-4, ...
        replies: dict[str, tuple[int, object]] = {}

        def store(up: Any) -> None:
            """Every candidate's reply (ConfdClient has dropped unsigned ones): StoreResultCallback keeps only
            the last and ConfdFilterCallback hides repeats, but "off" needs all of them to agree."""
            if up.type == client.UPCALL_REPLY and up.salt == req.rsalt:
                replies[up.server_ip] = (up.server_reply.status, up.server_reply.answer)

        confd = client.ConfdClient(key, peers, store)
        try:
            confd.SendRequest(req, coverage=-1, async_=False)  # to every candidate
            while len(replies) < needed and (left := deadline - time.monotonic()) > 0:
                confd.ReceiveReply(timeout=left)
        finally:
            confd._socket.close()  # its UDP socket, also out of asyncore's global map
    except Exception:
        return None
    return from_confd(replies.values(), needed)


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


def state_dirs(lib_dir: str, trees: Iterable[str] = GANETI_TREES) -> list[str]:
    """`lib_dir`, then the state dir of every Ganeti installed here, as its own constants name it: a Ganeti
    built with another localstatedir keeps config.data and ssconf elsewhere, and not finding them at the
    usual place must not read as "no Ganeti cluster here" (which lets an adopt or clone go ahead)."""
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


def _from_dir(lib_dir: str) -> bool | str | None:
    """The setting as one state dir tells it; "absent" when the dir holds no Ganeti cluster at all."""
    try:
        with open(os.path.join(lib_dir, "config.data")) as fh:
            return from_config(json.load(fh))
    except FileNotFoundError:
        if not os.path.exists(os.path.join(lib_dir, "ssconf_cluster_name")):
            return "absent"
    except (OSError, ValueError, AttributeError):
        pass
    return ask_confd(lib_dir)


def wipes_new_disks(lib_dir: str = GANETI_LIB, trees: Iterable[str] = GANETI_TREES) -> bool | None:
    """True or False as this node's config.data says, or else (not a master candidate) as ganeti-confd
    says; False only when no installed Ganeti keeps a cluster's state here; None when none can tell."""
    for where in state_dirs(lib_dir, trees):
        state = _from_dir(where)
        if state != "absent":
            return state  # type: ignore[return-value]
    return False


def refuse_if_wiped(what: str, lib_dir: str = GANETI_LIB, trees: Iterable[str] = GANETI_TREES) -> None:
    """Refuse, before any change, a create whose data Ganeti's wipe would zero (or may, unknown here)."""
    state = wipes_new_disks(lib_dir, trees)
    if state:
        raise UsageError(f"Ganeti's prealloc_wipe_disks is on and would zero {what} right after this create; "
                         f"turn it off for this ({OFF}), add the disk, then turn it on again")
    if state is None:
        raise UsageError(f"cannot tell whether Ganeti's prealloc_wipe_disks (which would zero {what}) is on: this "
                         f"node has no readable {lib_dir}/config.data (not a master candidate?) and ganeti-confd on "
                         f"the master candidates gave no consistent answer within {CONFD_BOUND_S:g} s; check that "
                         "ganeti-confd runs there, make this node a candidate (gnt-node modify "
                         "--master-candidate=yes) or use a master candidate as primary node")
