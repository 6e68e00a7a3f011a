"""ganeti-ceph: data_collector (see doc/)."""
