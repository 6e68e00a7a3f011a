"""The fault suite's ledger adds rows up per scenario and flags a call past its bound."""

import json

from tests.reliability.ledger import Ledger, Row


def test_rows_of_a_scenario_add_up_and_the_table_flags_past_bound(tmp_path):
    led = Ledger()
    led.record(Row("osd-kill", acked_writes=10, max_s=3.0, bound_s=30))
    led.record(Row("osd-kill", acked_writes=5, lost=1, max_s=40.0, bound_s=30, leaks=2))
    row = led.rows["osd-kill"]
    assert (row.runs, row.acked_writes, row.lost, row.max_s, row.leaks) == (2, 15, 1, 40.0, 2)
    assert "PAST" in led.table()
    assert led.totals() == {"lost": 1, "leaks": 2, "past_bound": 1, "tracebacks": 0}
    led.dump(str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())[0]["scenario"] == "osd-kill"
