import json

from ganeti_ceph.rbd.locks import PREFIX, Holder, parse_holders


def test_parse_holders() -> None:
    meta = {
        "ganeti.uuid": "u",
        PREFIX + "a": json.dumps({"mode": "exclusive", "ip": "10.0.0.1"}),
        PREFIX + "b": json.dumps({"mode": "shared", "ip": "10.0.0.2"}),
        PREFIX + "c": "garbage",
    }
    assert parse_holders(meta) == [Holder("a", True, "10.0.0.1"), Holder("b", False, "10.0.0.2"), Holder("c", True, "")]

