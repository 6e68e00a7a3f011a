"""Shared core of ganeti-ceph: config, Ceph session, naming and errors.

Every part (extstorage, hooks, gnt_storage, data_collector) imports these
modules; nothing here is copied elsewhere.
"""

__version__ = "0.1.0"
