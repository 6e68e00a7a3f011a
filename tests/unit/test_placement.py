"""The catalogue file and placement decisions: pure, no Ceph."""

from __future__ import annotations

import pytest
import yaml

from ganeti_ceph.config import Config
from ganeti_ceph.errors import ConfigError, UsageError
from ganeti_ceph.rbd import backends, catalogue, iostats, placement
from ganeti_ceph.rbd.catalogue import Backend, Catalogue, Project
from ganeti_ceph.rbd.placement import GIB, Figures, Usage

CFG = Config(conf="/etc/ceph/ceph.conf", keyring="/etc/ceph/k", pool="rbd", catalogue="/nonexistent/cat.yaml")


def cat_of(*backends_: dict, **extra: object) -> Catalogue:
    return catalogue.parse({"backends": list(backends_), **extra}, CFG)


def figs(free_gib: float, provisioned_gib: float = 0, volumes: int = 0, stored_gib: float = 0) -> Figures:
    return Figures(int((stored_gib + free_gib) * GIB), int(free_gib * GIB), int(stored_gib * GIB),
                   int(provisioned_gib * GIB), volumes)


def test_without_a_file_the_default_backend_is_ceph_yamls_without_limits() -> None:
    cat = catalogue.load(CFG)
    assert not cat.declared and cat.names() == ["default"]
    assert cat.default.config(CFG) == CFG and placement.over_limits(cat.default, figs(0, 999), GIB, 1) is None


def test_the_file_round_trips_and_the_default_comes_first() -> None:
    cat = cat_of({"name": "ssd", "pool": "fast", "tags": "b+a", "cost": 2},
                 {"name": "default", "pool": "rbd", "cost": 5}, {"name": "t", "pool": "rbd", "namespace": "x"},
                 projects=[{"name": "acme", "quota_gib": 10}])
    assert cat.names() == ["default", "ssd", "t"] and cat.get("ssd").tags == ("a", "b")
    assert cat.get("t").location == "rbd/x" and cat.project("acme") == Project("acme", 10.0)
    assert catalogue.parse(yaml.safe_load(catalogue.dump(cat)), CFG) == cat


@pytest.mark.parametrize(("data", "says"), [
    ({"backends": [{"name": "a", "pool": "p", "colour": "red"}]}, "colour"),
    ({"backends": [{"name": "a"}]}, "pool"),
    ({"backends": [{"name": "a", "pool": "p"}, {"name": "a", "pool": "q"}]}, "declared twice"),
    ({"backends": [{"name": "a b", "pool": "p"}]}, "invalid backend name"),
    ({"backends": [{"name": "a", "pool": "p", "cost": -1}]}, "cost"),
    ({"backends": [{"name": "a", "pool": "p", "cost": float("nan")}]}, "cost"),
    ({"backends": [{"name": "a", "pool": "p", "tags": ["ok", "no way"]}]}, "invalid tag"),
    ({"backends": {"name": "a"}}, "list of mappings"),
    ({"index": "nosuch"}, "unknown backend"),
    ({"pools": []}, "unknown key"),
    ([1, 2], "expected a mapping"),
])
def test_a_bad_file_is_one_error(data: object, says: str) -> None:
    with pytest.raises((ConfigError, UsageError), match=says):
        catalogue.parse(data, CFG)


def test_the_cheapest_backend_with_every_tag_and_room_wins() -> None:
    cat = cat_of({"name": "default", "pool": "rbd", "cost": 9}, {"name": "a", "pool": "a", "tags": ["ssd"], "cost": 2},
                 {"name": "b", "pool": "b", "tags": ["ssd", "x"], "cost": 1},
                 {"name": "c", "pool": "c", "tags": ["ssd"], "cost": 1})
    room = {n: figs(100) for n in cat.names()}
    assert placement.choose(cat, room, GIB).name == "b"  # cost 1, ties: most free, then declared order
    assert placement.choose(cat, {**room, "c": figs(200)}, GIB, ("ssd",)).name == "c"
    assert placement.choose(cat, room, GIB, ("ssd", "x")).name == "b"
    assert placement.choose(cat, {**room, "b": figs(0.5), "c": figs(0.5)}, GIB, ("ssd",)).name == "a"


def test_a_refusal_names_every_backend_and_why() -> None:
    cat = cat_of({"name": "default", "pool": "rbd", "cost": 9}, {"name": "q", "pool": "q", "quota_volumes": 1},
                 {"name": "g", "pool": "g", "quota_gib": 1.5}, {"name": "o", "pool": "o", "overcommit": 2})
    f = {"default": "cluster ceph: df timed out", "q": figs(100, 0, 1), "g": figs(100, 1), "o": figs(1, 1.5)}
    with pytest.raises(UsageError) as exc:
        placement.choose(cat, f, GIB)
    line = str(exc.value)
    assert "\n" not in line
    assert "default: unreachable (cluster ceph: df timed out)" in line
    assert "q: volume quota 1 reached" in line and "g: quota 1.5 GiB would be exceeded" in line
    assert "o: no room: 2.5 GiB provisioned would pass 2 x capacity 1 GiB" in line
    with pytest.raises(UsageError, match="lacks tag ssd"):
        placement.choose(cat, f, GIB, ("ssd",))


def test_overcommit_zero_means_no_capacity_check_and_quotas_still_hold() -> None:
    b = Backend("x", "p", overcommit=0, quota_gib=2)
    assert placement.over_limits(b, figs(0, 1), GIB, 1) is None
    assert "quota 2 GiB" in placement.over_limits(b, figs(0, 1.5), GIB, 1)


def test_projects() -> None:
    assert placement.project_of(["a", "project:acme", "b"], "project:") == "acme"
    assert placement.project_of(["project:"], "project:") is None
    with pytest.raises(UsageError, match="acme, beta"):
        placement.project_of(["project:acme", "project:beta"], "project:")
    p = Project("acme", quota_gib=10, quota_volumes=3)
    placement.refuse_project(p, Usage(9 * GIB, 2), GIB, 1)
    with pytest.raises(UsageError, match="project acme: quota 10 GiB"):
        placement.refuse_project(p, Usage(9 * GIB, 2), 2 * GIB, 1)
    with pytest.raises(UsageError, match="disk quota 3"):
        placement.refuse_project(p, Usage(0, 3), 0, 1)


def test_records_and_figures() -> None:
    rec = backends.Record("a", 5 * GIB)
    assert backends.parse_record(rec.dump()) == rec
    for bad in (None, "", "{", '{"backend": "a"}', '{"backend": "a", "size": "x"}', "[]"):
        assert backends.parse_record(bad) is None
    stats = backends.pool_stats({"pools": [{"name": "p", "stats": {"stored": 3, "max_avail": 7}}]})
    recs = [backends.Record("a", 2), backends.Record("a", 3), backends.Record("b", 100)]
    assert backends.figures_of(Backend("a", "p"), stats, recs) == Figures(10, 7, 3, 5, 2)
    gone = "pool gone is not in ceph df (missing, or made moments ago)"
    assert backends.figures_of(Backend("a", "gone"), stats, recs) == gone


def test_rates_are_summed_per_pool_or_namespace() -> None:
    answer = {"pool_descriptors": {"1": "p"}, "stat_descriptors": ["write_bytes_sec", "read_bytes_sec"],
              "stats": [{"1/img": [10, 1]}, {"1/ns/img2": [5, 2]}, {"1/ns/img3": [1, 1]}]}
    io = iostats.image_io({"p": answer})
    assert iostats.location_io(io, "p")["write_bytes_sec"] == 10
    assert iostats.location_io(io, "p/ns") == {"read_bytes_sec": 3, "write_bytes_sec": 6, "read_op_per_sec": 0,
                                               "write_op_per_sec": 0}


def test_backend_and_tag_names() -> None:
    assert catalogue.parse_tags("b+a,a") == ("a", "b") and catalogue.parse_tags("") == ()
    for bad in ("", "x" * 65, "a/b", "é"):
        with pytest.raises(UsageError):
            catalogue.check_backend_name(bad)


def test_project_usage_from_gnt_instance_list() -> None:
    from ganeti_ceph.ganeti.cli import parse_usage

    text = ("a|['project:acme', 'x']|ext|[1024, 2048]\n"
            "b|['project:acme']|plain|[512]\n"
            "c|['project:other']|ext|[64]\n"
            "d|['project:acme']|ext|[]\n"
            "me|['project:acme']|ext|[100]\n")
    assert parse_usage(text, "project:acme", exclude="me") == (3072, 2)
    assert parse_usage(text, "project:acme") == (3172, 3)


def test_the_hook_environment_of_an_add_and_a_grow() -> None:
    from hooks.env import parse

    add = parse({"GANETI_HOOKS_PATH": "instance-add", "GANETI_INSTANCE_TAGS": "project:acme web",
                 "GANETI_INSTANCE_DISK_TEMPLATE": "ext", "GANETI_INSTANCE_DISK_COUNT": "2",
                 "GANETI_INSTANCE_DISK0_SIZE": "1024", "GANETI_INSTANCE_DISK1_SIZE": "512"})
    assert (add.tags, add.template, add.new_sizes) == (("project:acme", "web"), "ext", (1024, 512))
    grow = parse({"GANETI_HOOKS_PATH": "disk-grow", "GANETI_AMOUNT": "2048", "GANETI_ABSOLUTE": "True",
                  "GANETI_DISK": "0"})
    assert (grow.amount, grow.absolute, grow.grown_disk) == (2048, True, 0)


def test_the_project_hook_leaves_other_templates_and_unconfigured_masters_alone(tmp_path, monkeypatch) -> None:
    """A drbd add, or any add on a master without ceph.yaml, is never vetoed for our config (review #4)."""
    from hooks import main
    from hooks.env import parse

    def broken() -> Config:
        raise ConfigError("a broken config must not be read")

    env = {"GANETI_HOOKS_PATH": "instance-add", "GANETI_HOOKS_PHASE": "pre", "GANETI_MASTER": "m",
           "GANETI_INSTANCE_TAGS": "project:acme", "GANETI_INSTANCE_DISK_COUNT": "1",
           "GANETI_INSTANCE_DISK0_SIZE": "1024", "GANETI_INSTANCE_DISK_TEMPLATE": "drbd"}
    monkeypatch.setenv("GANETI_CEPH_CONFIG", str(tmp_path / "ceph.yaml"))
    (tmp_path / "ceph.yaml").write_text("conf: /x\n")
    assert main.run(parse(env), "m", load=broken) == 0
    (tmp_path / "ceph.yaml").unlink()
    assert main.run(parse({**env, "GANETI_INSTANCE_DISK_TEMPLATE": "ext"}), "m", load=broken) == 0


@pytest.mark.parametrize("path", ["relative.conf", "/etc/ceph/a:b.conf", "/etc/ceph/a,b", "/etc/ceph/a b"])
def test_a_backend_path_qemu_could_not_carry_is_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="absolute path without"):
        cat_of({"name": "far", "pool": "rbd", "conf": path})
