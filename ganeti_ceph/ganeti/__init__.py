"""Everything ganeti-ceph reads of Ganeti, in one place.

- `cli`: gnt-* commands and their `-o` fields (Ganeti's query interface), bounded;
- `ssconf`: the node's ssconf files and where Ganeti keeps its state;
- `confd`: one bounded question to ganeti-confd on the master candidates;
- `config_data`: the private config.data, read only for a layout it knows.
"""

from ganeti_ceph.errors import GanetiFailed

__all__ = ["SEP", "GNode", "Ganeti", "GanetiFailed", "condense", "parse_groups", "parse_list", "parse_nodes",
           "run_command"]
_CLI = frozenset(__all__) - {"GanetiFailed"}


def __getattr__(name: str) -> object:
    """cli's names, loaded at their first use: a provider call that reads only ssconf (a create's
    prealloc_wipe check) does not load cli."""
    if name in _CLI:
        from ganeti_ceph.ganeti import cli

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
