"""One key of a pool-level omap index object: a look-up is one read, whatever the pool holds.

The pool's registries (in-flight adoptions, see volumes.adopt; snapshot
volumes, see snapshots.py; imported images, images.py; placement records,
backends.py) are omap objects next to the images: reading a key needs no
listing of the pool and no image opens, so a missing key costs one round
trip. A whole registry is read in pages (`items`).
"""

from __future__ import annotations

from collections.abc import Iterator

import rados

from ganeti_ceph.session import Session


def get(session: Session, ioctx: rados.Ioctx, obj: str, key: str, what: str = "") -> str | None:
    """The value of `key` in `obj`'s omap; None if the key or the object is absent."""
    with session.errors(what or f"read {obj}"), rados.ReadOpCtx() as op:
        it, _ = ioctx.get_omap_vals_by_keys(op, (key,))
        try:
            ioctx.operate_read_op(op, obj)
        except rados.ObjectNotFound:
            return None
        return next((v.decode() for _, v in it), None)


def items(session: Session, ioctx: rados.Ioctx, obj: str, what: str = "",
          page: int = 512) -> Iterator[tuple[str, bytes]]:
    """Every key of `obj`'s omap with its value (undecoded: each index reads its own), in key order, read `page`
    keys at a time; none if the object is absent. The caller's work on a page runs outside the error mapping."""
    after = ""
    while True:
        with session.errors(what or f"read {obj}"), rados.ReadOpCtx() as op:
            it, _ = ioctx.get_omap_vals(op, after, "", page)
            try:
                ioctx.operate_read_op(op, obj)
            except rados.ObjectNotFound:
                return
            got = list(it)
        yield from got
        if len(got) < page:
            return
        after = got[-1][0]


def put(session: Session, ioctx: rados.Ioctx, obj: str, key: str, value: str | None, what: str = "") -> None:
    """Set `key` to `value` in `obj`'s omap (made if needed), or remove it (value None)."""
    with session.errors(what or f"write {obj}"), rados.WriteOpCtx() as op:
        if value is None:
            ioctx.remove_omap_keys(op, (key,))
        else:
            op.new(rados.LIBRADOS_CREATE_IDEMPOTENT)
            ioctx.set_omap(op, (key,), (value.encode(),))
        try:
            ioctx.operate_write_op(op, obj)
        except rados.ObjectNotFound:  # removing from an index never written: nothing to remove
            if value is not None:
                raise
