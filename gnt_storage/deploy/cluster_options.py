"""`gnt-storage -S ceph:key=value`: cluster-wide defaults for init-distributed-storage.

Kept as Ganeti cluster tags (`ganeti-ceph:opt:<key>:<value>`), so they
follow the master role. Allowed only while no storage cluster exists:
afterwards pool, client and sizes are the cluster's own and fixed.
"""

from __future__ import annotations

from dataclasses import fields

from ganeti_ceph.errors import UsageError
from ganeti_ceph.ganeti import Ganeti
from gnt_storage.deploy import options


def set_options(specs: list[str], ganeti: Ganeti | None = None) -> int:
    ganeti = ganeti or Ganeti()
    tagged = [g for g, tags in ganeti.groups().items() if options.STORAGE_TAG in tags]
    if tagged:
        raise UsageError(f"node group {tagged[0]} is already the storage cluster: its options are fixed; "
                         "storage options apply only before init-distributed-storage")
    old_tags = [t for t in ganeti.cluster_tags() if t.startswith(options.TAG_PREFIX)]
    new = options.parse(specs, options.from_tags(old_tags))
    new_tags = options.to_tags(new)
    ganeti.remove_cluster_tags([t for t in old_tags if t not in new_tags])
    ganeti.add_cluster_tags([t for t in new_tags if t not in old_tags])
    return show(ganeti)


def show(ganeti: Ganeti | None = None) -> int:
    ganeti = ganeti or Ganeti()
    opts = options.from_tags(ganeti.cluster_tags())
    for field in fields(opts):  # keys with a single accepted value (options.KEYS) are no setting to show
        key, value = field.name, getattr(opts, field.name)
        if isinstance(value, tuple):  # device lists
            text = ",".join(value)
        elif key == "cluster_network" and not value:
            text = "(Ganeti's secondary network of the group's nodes, if they have one)"
        else:
            text = "(from the group's size)" if value is None else value
        print(f"ceph:{key}={text}")
    return 0
