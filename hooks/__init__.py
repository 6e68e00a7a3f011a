"""ganeti-ceph: hooks (see doc/)."""
