"""Ceph deployment: the local cluster, a node group's cluster, its nodes."""
