"""Shared core of ganeti-ceph: config, Ceph session, runner, naming and errors,
what is read of Ganeti (ganeti/) and the volume service (rbd/).

Every part (extstorage, hooks, gnt_storage, data_collector) imports these
modules, and nothing here imports a part (doc/architecture.md); nothing here
is copied elsewhere.
"""

__version__ = "0.1.0"
