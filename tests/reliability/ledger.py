"""The fault suite's ledger: one row per scenario, the table `make reliability` prints.

Scenario tests call `ledger.record(Row(...))` (through the `ledger` fixture);
rows of the same scenario add up. At the end of the session the table is
printed, and written as JSON to $GANETI_CEPH_RELIABILITY_OUT when set
(`make reliability` sets it to reliability/results.json).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace

COLUMNS = ("scenario", "runs", "acked_writes", "lost", "max_s", "bound_s", "leaks", "tracebacks")
OUT_ENV = "GANETI_CEPH_RELIABILITY_OUT"


@dataclass(frozen=True)
class Row:
    """What one scenario proved: `acked_writes` acknowledged writes checked, `lost` of them
    not read back intact, `max_s` the longest bounded call against its bound `bound_s`,
    `leaks` mappings/mounts/locks/records/processes left behind, `tracebacks` seen."""

    scenario: str
    runs: int = 1
    acked_writes: int = 0
    lost: int = 0
    max_s: float = 0.0
    bound_s: float = 0.0
    leaks: int = 0
    tracebacks: int = 0

    @property
    def past_bound(self) -> bool:
        return self.bound_s > 0 and self.max_s > self.bound_s

    def merge(self, other: Row) -> Row:
        return replace(self, runs=self.runs + other.runs, acked_writes=self.acked_writes + other.acked_writes,
                       lost=self.lost + other.lost, max_s=max(self.max_s, other.max_s),
                       bound_s=max(self.bound_s, other.bound_s), leaks=self.leaks + other.leaks,
                       tracebacks=self.tracebacks + other.tracebacks)


class Ledger:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def record(self, row: Row) -> None:
        if not (math.isfinite(row.max_s) and math.isfinite(row.bound_s)):
            raise ValueError(f"{row.scenario}: times must be finite")
        old = self.rows.get(row.scenario)
        self.rows[row.scenario] = old.merge(row) if old else row

    def table(self) -> str:
        """Scenario, runs, acknowledged writes, lost, max time vs bound, leaks, tracebacks."""
        head = ("scenario", "runs", "acked writes", "lost", "max s / bound s", "leaks", "tracebacks")
        body = [(r.scenario, str(r.runs), str(r.acked_writes), str(r.lost),
                 f"{r.max_s:.1f} / {r.bound_s:.0f}" + (" PAST" if r.past_bound else ""), str(r.leaks),
                 str(r.tracebacks)) for r in sorted(self.rows.values(), key=lambda r: r.scenario)]
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in (head, *body)]
        return "\n".join(lines)

    def totals(self) -> dict[str, int]:
        rows = self.rows.values()
        return {"lost": sum(r.lost for r in rows), "leaks": sum(r.leaks for r in rows),
                "past_bound": sum(r.past_bound for r in rows), "tracebacks": sum(r.tracebacks for r in rows)}

    def dump(self, path: str) -> None:
        """Write the rows as JSON; rows of scenarios this session did not run are kept from `path`,
        so a partial run (`make reliability RELIABILITY=...`) updates only its own rows."""
        rows = {r["scenario"]: r for r in _previous(path)}
        rows.update((r.scenario, asdict(r)) for r in self.rows.values())
        data = [rows[k] for k in sorted(rows)]
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)


def _previous(path: str) -> list[dict]:
    """The rows of an earlier results file with the same columns, or none."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [r for r in data if isinstance(r, dict) and set(r) == set(COLUMNS)]
