"""Test beds for ganeti-ceph: real systems brought up on this one machine (not shipped).

`testbed.ganeti` runs a real multi-node Ganeti cluster, each node in its own
Linux namespaces, for the end-to-end tests and the demo.
"""
