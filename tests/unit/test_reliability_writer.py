"""The fault suite's pure parts: the writer's record format and the results file merge."""

import json

from tests.reliability.ledger import Ledger, Row
from tests.reliability.writer import BLOCK, Writer, parse, record


def test_a_record_reads_back_as_its_salt_and_seq_and_any_damage_is_seen():
    block = record(7, 42)
    assert len(block) == BLOCK and parse(block) == (7, 42)
    assert parse(record(8, 42)) != (7, 42)  # a stale log of another run never passes
    for at in (0, 20, 2000, BLOCK - 1):
        damaged = bytearray(block)
        damaged[at] ^= 1
        assert parse(bytes(damaged)) is None
    assert parse(bytes(BLOCK)) is None and parse(block[:-1]) is None


def test_lost_lists_the_acknowledged_records_not_read_back():
    image = bytearray(16 * BLOCK)
    for seq in (3, 4, 6):  # 5 was acknowledged but never landed; 6 holds another run's record
        image[seq * BLOCK:(seq + 1) * BLOCK] = record(1 if seq != 6 else 2, seq)
    w = Writer.__new__(Writer)
    w.salt, w.acked = 1, [3, 4, 5, 6]
    assert w.lost(lambda off, n: bytes(image[off:off + n])) == [5, 6]


def test_a_partial_run_keeps_the_rows_of_scenarios_it_did_not_run(tmp_path):
    out = tmp_path / "results.json"
    first = Ledger()
    first.record(Row("ganeti: failover", acked_writes=3))
    first.record(Row("ceph: osd", acked_writes=1, lost=1))
    first.dump(str(out))
    second = Ledger()
    second.record(Row("ceph: osd", acked_writes=9))
    second.dump(str(out))
    rows = {r["scenario"]: r for r in json.loads(out.read_text())}
    assert rows["ceph: osd"]["acked_writes"] == 9 and rows["ceph: osd"]["lost"] == 0
    assert rows["ganeti: failover"]["acked_writes"] == 3
