"""ganeti-ceph: extstorage (see doc/)."""
