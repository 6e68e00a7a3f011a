"""gnt-storage: Ceph bootstrap onto Ganeti nodes, and the local single-host cluster."""
