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
ganeti-confd on the candidates. Ganeti's state is read through
ganeti_ceph.ganeti (ssconf, confd, config_data).
See doc/extstorage.md and doc/access-switch.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from ganeti_ceph.errors import GanetiFailed, UsageError
from ganeti_ceph.ganeti import ssconf

GANETI_LIB = ssconf.LIB_DIR
OFF = "gnt-cluster modify --prealloc-wipe-disks no"
CONFD_QUERY = "/cluster/prealloc_wipe_disks"
# The whole ask, import included: confd answers in milliseconds; no config timeout is this short, and a
# create should not wait the 10 s of a Ceph connect for an answer that, missing, only means "refuse".
CONFD_BOUND_S = 2.0


def ask_confd(lib_dir: str = GANETI_LIB, bound: float = CONFD_BOUND_S) -> bool | None:
    """The setting as ganeti-confd on the master candidates says it, within `bound`; None: cannot tell."""
    from ganeti_ceph.ganeti import confd  # only for an adopt or a clone: not loaded by every create

    return confd.ask_bool(CONFD_QUERY, lib_dir, bound)


def _from_dir(lib_dir: str) -> bool | str | None:
    """The setting as one state dir tells it; "absent" when the dir holds no Ganeti cluster at all."""
    from ganeti_ceph.ganeti import config_data  # as confd above

    try:
        cfg = config_data.load(lib_dir)
        if cfg is not None:
            return config_data.wipes_new_disks(cfg)
    except GanetiFailed:
        return ask_confd(lib_dir)
    if not ssconf.in_cluster(lib_dir):
        return "absent"
    return ask_confd(lib_dir)


def wipes_new_disks(lib_dir: str = GANETI_LIB, trees: Iterable[str] = ssconf.GANETI_TREES) -> bool | None:
    """True or False as this node's config.data says, or else (not a master candidate) as ganeti-confd
    says; False only when no installed Ganeti keeps a cluster's state here; None when none can tell."""
    for where in ssconf.state_dirs(lib_dir, trees):
        state = _from_dir(where)
        if state != "absent":
            return state  # type: ignore[return-value]
    return False


def refuse_if_wiped(what: str, lib_dir: str = GANETI_LIB, trees: Iterable[str] = ssconf.GANETI_TREES) -> None:
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
