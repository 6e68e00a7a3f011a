"""Our metadata on an image's header object, through cls_rbd: one OSD call each, no image opened.

librbd's metadata_set and metadata_remove first take the image's exclusive
lock, which short-lived clients on one image hand to each other through
watch/notify. In a crowd of calls on one volume (Ganeti's jobs in parallel,
an agent and in-process calls) that handover can keep a caller waiting past
its whole bound: a setinfo among 32 calls on one volume waited more than
60 s for the lock (CI, 2026-12-01). The keys written here are ours
(`ganeti.*`: the open records, Ganeti's setinfo text, the records of a new
image), never librbd's `conf_*` overrides, so no open client of the image
has to be told of them: they are written with the same cls_rbd methods
librbd calls under its lock, on the header object itself, and so are bound
by the session's OSD timeout like every other OSD call (plus the read of
`rbd_id.<name>` that finds the header). A change is one compound write that
first proves its precondition in the same operation: a write, that the
header still exists (an omap write would otherwise make a bare header for
an image removed meanwhile); a removal, that the key is there (so of two
concurrent removals of one key exactly one succeeds). Not done, unlike
librbd: refusing a non-primary mirrored image and journaling the change
(our keys are no data a mirror needs). The encodings are cls_rbd's
documented ones: a string is u32 length + bytes; a map is u32 count, then
its pairs.
"""

from __future__ import annotations

import struct

import rados

from ganeti_ceph.errors import CephError

LIST_MAX = 4096  # keys per metadata_list call: far more than an image of ours carries
LIST_OUT = 1 << 22  # bytes the OSD may answer with
NOSNAP = struct.pack("<Q", 2**64 - 2)  # CEPH_NOSNAP: the head, for get_size


def encode(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def _decode_map(raw: bytes) -> dict[str, bytes]:
    """cls_rbd's map<string, bufferlist>: u32 count, then u32-length-prefixed pairs."""
    (count,), pos, found = struct.unpack_from("<I", raw), 4, {}
    for _ in range(count):
        (klen,) = struct.unpack_from("<I", raw, pos)
        key = raw[pos + 4:pos + 4 + klen].decode()
        pos += 4 + klen
        (vlen,) = struct.unpack_from("<I", raw, pos)
        found[key] = raw[pos + 4:pos + 4 + vlen]
        pos += 4 + vlen
    return found


def of_id(image_id: str) -> str:
    """The header object of the image with id `image_id`."""
    return f"rbd_header.{image_id}"


def oid(ioctx: rados.Ioctx, name: str) -> str:
    """The header object of image `name` (format 2): its id read from `rbd_id.<name>`."""
    raw = ioctx.read(f"rbd_id.{name}")
    (length,) = struct.unpack("<I", raw[:4])
    return of_id(raw[4:4 + length].decode())


def exists(ioctx: rados.Ioctx, header: str) -> bool:
    """Whether the header object `header` exists (one stat)."""
    try:
        ioctx.stat(header)
    except rados.ObjectNotFound:
        return False
    return True


def read(ioctx: rados.Ioctx, name: str, header: str | None = None) -> dict[str, str]:
    """Every metadata key of image `name` and its value (`header`: its header object, if known)."""
    _, out = ioctx.execute(header or oid(ioctx, name), "rbd", "metadata_list",
                           encode("") + struct.pack("<Q", LIST_MAX), length=LIST_OUT)
    found = _decode_map(out)
    if len(found) >= LIST_MAX:  # never so many of ours: say so rather than miss a record
        raise CephError(f"image {name} has {LIST_MAX} or more metadata keys; ganeti-ceph reads at most "
                        f"{LIST_MAX - 1}: remove the ones not ours (rbd image-meta list/remove)")
    return {k: v.decode(errors="replace") for k, v in found.items()}


def _operate(ioctx: rados.Ioctx, header: str, steps: list[tuple[str, bytes]]) -> None:
    """cls_rbd `steps` (method, input) as one write operation: all of them or none."""
    op = ioctx.create_write_op()
    try:
        for method, data in steps:
            op.execute("rbd", method, data)
        ioctx.operate_write_op(op, header)
    finally:
        ioctx.release_write_op(op)


def write(ioctx: rados.Ioctx, name: str, meta: dict[str, str], header: str | None = None) -> None:
    """Set `meta` on image `name` in one operation, only while its header exists (`header`: that
    object, if known); a header gone raises rados.ObjectNotFound."""
    if meta:
        payload = struct.pack("<I", len(meta)) + b"".join(encode(k) + encode(v) for k, v in meta.items())
        _operate(ioctx, header or oid(ioctx, name), [("get_size", NOSNAP), ("metadata_set", payload)])


def remove(ioctx: rados.Ioctx, name: str, key: str, header: str | None = None) -> bool:
    """Remove `key` from image `name`'s metadata in one operation; False if it was not there (or the
    image is gone: cls_rbd's answer is the same)."""
    try:
        _operate(ioctx, header or oid(ioctx, name), [("metadata_get", encode(key)),
                                                     ("metadata_remove", encode(key))])
    except rados.ObjectNotFound:
        return False
    return True
