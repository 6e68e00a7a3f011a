"""One question to ganeti-confd on the master candidates, with Ganeti's own client, bounded.

Nodes that are not master candidates hold no config.data; confd answers
them. Only an answer every needed candidate gives alike counts.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from ganeti_ceph.ganeti import ssconf

OK = 0  # ConfdReply status: CONFD_REPL_STATUS_OK


def verdict(answers: Iterable[tuple[int, object]], needed: int) -> bool | None:
    """A boolean from confd's replies (status, answer), one per candidate that answered: conclusive only
    when at least `needed` answered, all with status OK and the same boolean; else None (cannot tell)."""
    answers = list(answers)
    if needed < 1 or len(answers) < needed:
        return None
    if any(status != OK or not isinstance(value, bool) for status, value in answers):
        return None
    values = {value for _, value in answers}
    return values.pop() if len(values) == 1 else None


def _ganeti_confd() -> tuple[ModuleType, ModuleType]:
    """Ganeti's confd client and constants, imported only here: its tree is on sys.path only during the
    import (nothing else may pick up Ganeti's modules), and its asyncore DeprecationWarnings stay quiet."""
    saved = list(sys.path)
    sys.path.insert(0, ssconf.GANETI_PY)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from ganeti import constants  # type: ignore[import-not-found]
            from ganeti.confd import client  # type: ignore[import-not-found]
    finally:
        sys.path[:] = saved
    return client, constants


def ask_bool(pointer: str, lib_dir: str, bound: float) -> bool | None:
    """The boolean at RFC 6901 `pointer` in config.data as ganeti-confd on the master candidates
    (ssconf_master_candidates_ips, signed with hmac.key, which every node has) says it, within `bound`
    seconds in all; None if it cannot tell. Haskell confd's ReqConfigQuery takes such a pointer
    (Confd/Utils.hs extractJSONPath), as Ganeti's tools/query-config sends it."""
    deadline = time.monotonic() + bound
    try:
        with open(os.path.join(lib_dir, "hmac.key")) as fh:
            key = fh.read()
    except (OSError, UnicodeDecodeError):
        return None
    peers = [p for line in ssconf.lines("master_candidates_ips", lib_dir) for p in line.split()]
    if not peers or not key:
        return None
    try:  # anything Ganeti's client raises (no route, bad address, ...) only means "cannot tell"
        client, constants = _ganeti_confd()
        req = client.ConfdClientRequest(type=constants.CONFD_REQ_CONFIG_QUERY, query=pointer)
        needed = client.ConfdClient._NeededReplies(len(peers))  # Ganeti's quorum: all of 1-2, all but 1 of 3-4, ...
        replies: dict[str, tuple[int, object]] = {}

        def store(up: Any) -> None:
            """Every candidate's reply (ConfdClient has dropped unsigned ones): StoreResultCallback keeps only
            the last and ConfdFilterCallback hides repeats, but a verdict needs all of them to agree."""
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
    return verdict(replies.values(), needed)
