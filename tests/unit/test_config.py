import pytest

from ganeti_ceph import config
from ganeti_ceph.errors import ConfigError

BASE = {"conf": "/etc/ceph/ceph.conf", "keyring": "/etc/ceph/ceph.client.ganeti.keyring"}


def test_minimal_config_gets_defaults() -> None:
    cfg = config.parse(BASE, "t.yaml")
    assert cfg.client_id == "admin" and cfg.pool == "rbd"
    assert cfg.timeouts.connect == 10 and cfg.timeouts.osd_op == 30


def test_round_trip_through_dump() -> None:
    import yaml

    cfg = config.parse({**BASE, "client": "ganeti", "pool": "disks", "timeouts": {"connect": 3}}, "t")
    again = config.parse(yaml.safe_load(config.dump(cfg)), "t")
    assert again == cfg


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({**BASE, "poool": "x"}, "unknown setting(s) poool"),
        ({"conf": "/x"}, "'keyring' must be set"),
        ({**BASE, "timeouts": {"connect": -1}}, "timeouts.connect must be a positive number"),
        ({**BASE, "timeouts": {"conect": 1}}, "unknown timeout(s) conect"),
        ({**BASE, "timeouts": {"connect": True}}, "positive number"),
        ({**BASE, "timeouts": {"connect": float("nan")}}, "timeouts.connect must be a positive number"),
        ({**BASE, "timeouts": {"action": float("inf")}}, "timeouts.action must be a positive number"),
        ({**BASE, "timeouts": {"osd_op": 1e300}}, "timeouts.osd_op must be a positive number"),
        ({**BASE, "pool": "bad/pool"}, "invalid pool name"),
        ({**BASE, "client": "client.ganeti"}, "invalid Ceph client id"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_config_is_one_line(data: object, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse(data, "t.yaml")
    assert needle in exc.value.message
    assert "\n" not in exc.value.message


def test_load_missing_and_invalid(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("conf: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        config.load(str(bad))


def test_path_from_environment() -> None:
    assert config.config_path({}) == config.DEFAULT_PATH
    assert config.config_path({config.ENV_VAR: "/tmp/x.yaml"}) == "/tmp/x.yaml"


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", ".NaN"])
def test_yaml_nan_and_inf_timeouts_are_refused(tmp_path, text: str) -> None:
    """YAML spells NaN and infinity .nan/.inf: both would unbound every call, so load refuses them."""
    path = tmp_path / "c.yaml"
    path.write_text(f"conf: /c\nkeyring: /k\ntimeouts:\n  connect: {text}\n")
    with pytest.raises(ConfigError, match=r"timeouts\.connect must be a positive number") as exc:
        config.load(str(path))
    assert "\n" not in exc.value.message


@pytest.mark.parametrize("content", [b"conf: /c\nkeyring: \xff\n", b"conf: " + b"[" * 600 + b"]" * 600 + b"\n"],
                         ids=["not-utf8", "deep"])
def test_undecodable_or_too_deep_yaml_is_one_config_error(tmp_path, content: bytes) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"UTF-8 YAML of a sane depth|nests over 32 deep"):
        config.load(str(path))


def test_special_files_are_refused_without_blocking(tmp_path) -> None:
    """A FIFO as the config would block the open; as conf or keyring it would block librados."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        config.load(str(fifo))
    for key, special in (("conf", str(fifo)), ("keyring", "/dev/zero")):
        path = tmp_path / f"{key}.yaml"
        path.write_text(config.dump(config.parse({**BASE, key: special}, "t")))
        with pytest.raises(ConfigError, match=f"{key} {special} is not a regular file"):
            config.load(str(path))


def test_an_alias_bomb_or_a_huge_file_is_refused_at_once(tmp_path) -> None:
    """9 levels of 9 aliases: 387 million strings if anything walked (or str()-ed) the value."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nconf: /c\nkeyring: /k\nclient: *l8\n")
    with pytest.raises(ConfigError):
        config.load(str(bomb))
    assert config.parse({**BASE, "pool": "rbd"}, "t").pool == "rbd"
    with pytest.raises(ConfigError, match="pool must be a single value"):
        config.parse({**BASE, "pool": ["rbd"]}, "t")
    huge = tmp_path / "huge.yaml"
    huge.write_text(f"conf: /c\nkeyring: /k\nnode: {'x' * (config.MAX_BYTES + 1)}\n")
    with pytest.raises(ConfigError, match="is over"):
        config.load(str(huge))


def test_every_key_is_in_the_table_once_and_dump_writes_it() -> None:
    """The table is the dataclasses' keys: dump writes each (node only when set) and parse reads it back."""
    import yaml

    names = [k.name for k in config.KEYS]
    assert len(names) == len(set(names)) and {"timeouts.action", "mapper", "node", "client"} <= set(names)
    cfg = config.parse({**BASE, "node": "n1", "mapper": "fuse-loop", "clone_max_depth": 0}, "t")
    data = yaml.safe_load(config.dump(cfg))
    flat = [k for k, v in data.items() if not isinstance(v, dict)]
    flat += [f"{k}.{sub}" for k, v in data.items() if isinstance(v, dict) for sub in v]
    assert sorted(flat) == sorted(names)
    assert config.parse(data, "t") == cfg
    assert "node" not in yaml.safe_load(config.dump(config.parse(BASE, "t")))


def test_the_committed_doc_is_the_generated_one() -> None:
    """doc/configuration.md lists every key as the table says; run scripts/config_doc.py after changing one."""
    from scripts import config_doc

    with open(config_doc.DOC, encoding="utf-8") as fh:
        doc = fh.read()
    assert config_doc.render(doc) == doc, "doc/configuration.md is stale: run python scripts/config_doc.py"
    assert all(f"| `{k.name}` |" in doc for k in config.KEYS)


def test_the_doc_example_is_a_valid_config() -> None:
    import yaml

    from scripts import config_doc

    with open(config_doc.DOC, encoding="utf-8") as fh:
        example = fh.read().split("```yaml\n", 1)[1].split("```", 1)[0]
    assert config.parse(yaml.safe_load(example), "example").client_id == "ganeti"
