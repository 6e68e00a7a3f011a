"""ganeti-ceph: data_collector, Ceph health in Ganeti's monitoring report format.

report.py and node.py decide (pure functions of Ceph's JSON and node facts),
gather.py asks (one Session, mon commands only), metrics.py renders
Prometheus text; cli.py, daemon.py and verify_hook.py are the entry points.
See doc/data-collector.md.
"""

NAME = "ceph"
CATEGORY = "storage"
KIND = 1  # status collector: data.status = {code, message}
FORMAT_VERSION = 1
