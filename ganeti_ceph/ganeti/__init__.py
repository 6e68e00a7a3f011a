"""Everything ganeti-ceph reads of Ganeti, in one place.

- `cli`: gnt-* commands and their `-o` fields (Ganeti's query interface), bounded;
- `ssconf`: the node's ssconf files and where Ganeti keeps its state;
- `confd`: one bounded question to ganeti-confd on the master candidates;
- `config_data`: the private config.data, read only for a layout it knows.
"""

from ganeti_ceph.errors import GanetiFailed
from ganeti_ceph.ganeti.cli import SEP, Ganeti, GNode, condense, parse_groups, parse_list, parse_nodes, run_command

__all__ = ["SEP", "GNode", "Ganeti", "GanetiFailed", "condense", "parse_groups", "parse_list", "parse_nodes",
           "run_command"]
