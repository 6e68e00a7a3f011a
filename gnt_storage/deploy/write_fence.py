"""No new image in a pool while remove-distributed-storage proves the cluster empty and purges it.

Ceph's own fence: a pool at its object quota is marked full in the osdmap
(full_quota) and every client's writes to it wait, an image's creation
included, until the quota is lifted. The quota is 1 object and we write one
object ourselves, so the pool is over it whatever it held. The mon marks the
pool full only once the mgr's statistics show that object (seconds): the
fence holds once the osdmap says so, and we wait for that, bounded.

A cap change (profile rbd-read-only) would not do: a client keeps the caps
of its ticket until the ticket is renewed, up to an hour later.
"""

from __future__ import annotations

import contextlib
import time

from ganeti_ceph import runner
from ganeti_ceph.errors import GanetiCephError
from ganeti_ceph.session import Session

MARK = "ganeti-ceph-removing"  # the object that puts the pool over its quota
FENCE_QUOTA = 1
WAIT_S = 90.0  # the mgr's stats period (5 s) and the mon's tick, many times over


def _full(session: Session) -> set[str]:
    """Pools the osdmap marks full (quota reached): writes to them wait."""
    return {p["pool_name"] for p in session.mon_command("osd dump").get("pools", [])
            if "full_quota" in p.get("flags_names", "").split(",")}


def fence(session: Session, pools: list[str]) -> dict[str, int]:
    """Stop new writes to `pools`; return their object quotas before (for lift). Raises if the
    osdmap does not mark them full within WAIT_S, and lifts what it put up on any failure. A pool
    an interrupted run left fenced is taken as it is: our marker keeps the quota it had before."""
    before: dict[str, int] = {}
    try:
        for pool in pools:
            before[pool] = _fence_one(session, pool)
        full = runner.until(time.monotonic() + WAIT_S, lambda: _full(session), lambda f: set(pools) <= f, 1.0)
        if not set(pools) <= full:
            raise GanetiCephError(f"Ceph did not mark pool(s) {', '.join(sorted(set(pools) - full))} full within "
                                  f"{WAIT_S:.0f} s after their quota was set; writes were not fenced")
    except BaseException:
        lift_quietly(session, before)
        raise
    return before


def _fence_one(session: Session, pool: str) -> int:
    """Fence one pool; its quota before. The marker is written first and holds that quota, so a run
    killed anywhere here leaves a pool whose quota a rerun and lift() can still give back."""
    quota = int(session.mon_command("osd pool get-quota", pool=pool).get("quota_max_objects", 0))
    kept = _kept(session, pool)
    if quota == FENCE_QUOTA and kept is not None:
        return kept  # fenced already: a write now would wait on the full pool
    with session.ioctx(pool) as ctx, session.errors(f"write {MARK} in {pool}"):
        ctx.write_full(MARK, str(quota).encode())
    session.mon_command("osd pool set-quota", pool=pool, field="max_objects", val=str(FENCE_QUOTA))
    return quota


def _kept(session: Session, pool: str) -> int | None:
    """The quota our marker in `pool` keeps, None without one (reads pass a full pool)."""
    import rados

    with session.ioctx(pool) as ctx, session.errors(f"read {MARK} in {pool}"):
        try:
            text = ctx.read(MARK, 32)
        except rados.ObjectNotFound:
            return None
    try:
        return int(text.decode() or 0)  # empty: a marker of 0.1.0, which fenced only pools without a quota
    except ValueError:
        return None


def lift_quietly(session: Session, before: dict[str, int]) -> None:
    """lift() on a failure path: if Ceph cannot be asked now, the rerun's fence() finds our marker."""
    with contextlib.suppress(GanetiCephError):
        lift(session, before)


def lift(session: Session, before: dict[str, int]) -> None:
    """Undo fence(): quotas as they were, our object gone (its removal waits until the pool is not full)."""
    for pool, quota in before.items():
        session.mon_command("osd pool set-quota", pool=pool, field="max_objects", val=str(quota))
    import rados

    for pool in before:
        with (session.ioctx(pool) as ctx, session.errors(f"remove {MARK} from {pool}"),
              contextlib.suppress(rados.ObjectNotFound)):  # not found: never written
            ctx.remove_object(MARK)
