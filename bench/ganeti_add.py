"""`gnt-instance add` of a 10 GiB instance: from a template (`origin=`) vs a fresh disk filled by a full copy;
from an imported image (`add-from-image`) vs an empty disk.

One single-node Ganeti test bed (testbed/) on its own local Ceph, shared by
the runs. The template is a 10 GiB image with 4 GiB written, snapshotted
once. Ours: `gnt-instance add ... --disk 0:size=10G,provider=rbd,origin=rbd/tmpl@gold`
(a copy-on-write clone). Baseline: the same add with a fresh 10 GiB disk,
then the template copied into it inside the node (`qemu-img convert -n`,
which skips holes), as one would without clones. Instances are removed,
untimed, after each run.

`add-from-image`: a 10 GiB raw file with 1 GiB written is imported once
(`gnt-storage image import`, untimed); ours is the add with
`origin=IMAGE` (a thin clone of the image's template snapshot), the
baseline the same add with an empty 10 GiB disk: a clone costs no copy.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from harness import (
    GNT_STORAGE,
    PORT_SPAN,
    SCRATCH,
    SHARED_PORT_BASE,
    BenchError,
    Ctx,
    Result,
    Shared,
    bench,
    compare,
    log,
)

from ganeti_ceph.session import Session
from gnt_storage.deploy.local import admin_config
from testbed import ceph as tb_ceph
from testbed.ganeti import HOST_ADDR, Testbed

TB_DIR = os.path.join(SCRATCH, "ganeti-testbed")
CEPH_DIR = os.path.join(SCRATCH, "ganeti-ceph")
CEPH_PORT = SHARED_PORT_BASE + 50 * PORT_SPAN
TEMPLATE, SNAP, DATA_MIB, SIZE = "tmpl", "gold", 4096, "10G"
ADD = ("gnt-instance", "add", "-t", "ext", "-o", "noop+default", "--hypervisor", "fake", "-B", "memory=128M",
       "--no-start", "--no-ip-check", "--no-name-check")


def start_testbed(shared: Shared, then: Callable[[], None] | None = None) -> Testbed:
    """The 1-node bed on its Ceph, then `then` (default: make_template)."""
    tb = Testbed(TB_DIR, CEPH_DIR, nodes=1)

    shared.on_close(lambda: tb_ceph.bed_down(tb))  # nodes, Ceph, bridge: a failure is logged, not ignored
    log(f"ganeti bench: bringing up a 1-node test bed in {TB_DIR} on Ceph port {CEPH_PORT}")
    try:
        tb.nodes_down()
        tb.network_up()
        tb_ceph.up(CEPH_DIR, HOST_ADDR, CEPH_PORT)
        tb.up()
        (then or make_template)()
    except Exception as exc:
        raise BenchError(f"test bed did not come up: {exc}") from exc
    return tb


def make_template() -> None:
    import rbd

    with Session(admin_config(CEPH_DIR)) as s, s.ioctx("rbd") as ioctx:
        rbd.RBD().create(ioctx, TEMPLATE, 10 * 1024**3, old_format=False, features=61)
        chunk = os.urandom(4 * 1024 * 1024)
        with rbd.Image(ioctx, TEMPLATE) as img:
            for off in range(0, DATA_MIB * 1024 * 1024, len(chunk)):
                img.write(chunk, off)
            img.create_snap(SNAP)


def images() -> set[str]:
    import rbd

    with Session(admin_config(CEPH_DIR)) as s, s.ioctx("rbd") as ioctx:
        return set(rbd.RBD().list(ioctx))


@bench("ganeti-add-from-origin", runs=3)
def ganeti_add(ctx: Ctx) -> Result:
    # Its bed is down before the next bench: bench/distributed.py's bed takes the same test bed id.
    own = Shared()
    try:
        return _ganeti_add(ctx, own.get("ganeti-testbed", start_testbed))
    finally:
        own.close()


def _ganeti_add(ctx: Ctx, tb: Testbed) -> Result:
    node = tb.node_names[0]
    count = iter(range(1000))

    def timed_add(disk: str, then: tuple[str, ...] = ()) -> float:
        name = f"bench{next(count)}"
        before = images()
        started = time.monotonic()
        tb.gnt(*ADD, "--disk", f"0:{disk}", "-n", node, name)
        if then:
            (vol,) = images() - before
            tb.run(0, [*then, f"rbd:rbd/{vol}:id=ganeti"], timeout=600)
        took = time.monotonic() - started
        tb.gnt("gnt-instance", "remove", "-f", name)
        return took

    def ours() -> float:
        return timed_add(f"size={SIZE},provider=rbd,origin=rbd/{TEMPLATE}@{SNAP}")

    def base() -> float:
        copy = ("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", f"rbd:rbd/{TEMPLATE}@{SNAP}:id=ganeti")
        return timed_add(f"size={SIZE},provider=rbd", copy)

    return compare("ganeti-add-from-origin", "add + full copy", ctx.runs, ours, base)


IMAGE, IMAGE_DATA_MIB = "bench-image", 1024


def import_image() -> None:
    """A 10 GiB raw disk, its first GiB written, imported as IMAGE through the command an admin runs."""
    path = os.path.join(SCRATCH, "bench-image.raw")
    os.makedirs(SCRATCH, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(10 * 1024**3)
        chunk = os.urandom(4 * 1024 * 1024)
        for _ in range(IMAGE_DATA_MIB // 4):
            fh.write(chunk)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
           "GANETI_CEPH_CONFIG": os.path.join(CEPH_DIR, "ganeti-ceph.yaml")}
    try:
        res = subprocess.run([GNT_STORAGE, "image", "import", path, IMAGE], capture_output=True, text=True,
                             env=env, timeout=1800, stdin=subprocess.DEVNULL, check=False)
    finally:
        os.unlink(path)
    if res.returncode != 0:
        raise BenchError(f"gnt-storage image import failed: {res.stderr.strip()}")


@bench("add-from-image", runs=9)  # a shared machine: adds vary by seconds
def add_from_image(ctx: Ctx) -> Result:
    own = Shared()
    try:
        tb = own.get("ganeti-testbed-image", lambda shared: start_testbed(shared, import_image))
        node = tb.node_names[0]
        count = iter(range(1000))

        def timed_add(disk: str) -> float:
            name = f"benchimg{next(count)}"
            started = time.monotonic()
            tb.gnt(*ADD, "--disk", f"0:{disk}", "-n", node, name)
            took = time.monotonic() - started
            tb.gnt("gnt-instance", "remove", "-f", name)
            return took

        return compare("add-from-image", "add empty disk", ctx.runs,
                       lambda: timed_add(f"size={SIZE},provider=rbd,origin={IMAGE}"),
                       lambda: timed_add(f"size={SIZE},provider=rbd"))
    finally:
        own.close()
