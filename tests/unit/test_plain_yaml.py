"""plain_yaml.parse reads what yaml.safe_load reads, or says OTHER: never a different value.

Generated files mix lines of the subset with the YAML that must go to PyYAML
(booleans, null, exponents, octal, sexagesimal, quotes, comments after a
value, odd indents, tabs, duplicates, control characters...).
"""

import random
from typing import Any

import pytest
import yaml

from ganeti_ceph import config, plain_yaml

KEYS = ["conf", "pool", "timeouts", "connect", "action", "node", "x_1", "on", "no", "null", "_k", "Key", "a-b"]
VALUES = ["", "10", "10.0", "0", "007", "0.5", "00.5", "1.", ".5", "1e3", "1.0e+3", "1_000", "0x1f", "0o7", "1:30",
          "-1", "+1", "yes", "No", "ON", "off", "true", "False", "null", "Null", "~", "y", "n", "krbd", "fuse-loop",
          "/etc/ceph/ceph.conf", "local (/tmp/x)", "a b", "a  b", "a #b", "a#b", "a: b", "a:b", "'q'", '"q"', "[a]",
          "{a: 1}", "&a x", "*a", "!!str 1", "- a", "-a", ".inf", ".nan", "2001-12-14", "=", "<<", "|", ">", "%x",
          "@x", "`x", "a,b", "x ", " x", "(x)", "node1.example.com", "é", "a\tb", "a\x0cb", "=x", "a=b"]
INDENTS = ["", "", "", "  ", "  ", " ", "   ", "    ", "\t"]


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 == 1.0 == True in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


GOOD_KEYS = KEYS[:7]
GOOD_VALUES = ["10", "10.0", "0", "0.5", "krbd", "fuse-loop", "/etc/ceph/ceph.conf", "local (/tmp/x)", "a b"]


def line(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.08:
        return rng.choice(["", " ", "# c", "  # c", "---", "...", "- a", "key", ":"])
    if kind < 0.5:  # in the subset, mostly
        return f"{rng.choice(GOOD_KEYS)}: {rng.choice(GOOD_VALUES)}"
    value = rng.choice(VALUES)
    return f"{rng.choice(INDENTS)}{rng.choice(KEYS)}:{rng.choice([' ', ' ', ' ', '  ', ''])}{value}"


def section(rng: random.Random) -> list[str]:
    """A `key:` line and lines under it, mostly indented as config.dump does."""
    lines = [f"{rng.choice(KEYS)}:"]
    for _ in range(rng.randint(0, 3)):
        lines.append(rng.choice(["  ", "  ", "  ", ""]) + line(rng).lstrip(" \t"))
    return lines


def document(rng: random.Random) -> str:
    lines: list[str] = []
    for _ in range(rng.randint(0, 5)):
        lines += section(rng) if rng.random() < 0.3 else [line(rng)]
    return "\n".join(lines) + rng.choice(["\n", "", "\r\n"])


def check(text: str) -> None:
    got = plain_yaml.parse(text)
    if got is plain_yaml.OTHER:
        return
    want = yaml.safe_load(text)  # an error here: the subset took a file PyYAML refuses
    assert same(got, want), (text, got, want)


def test_generated_files_read_as_pyyaml_reads_them_or_go_to_it() -> None:
    rng = random.Random(1234)
    taken = sections = 0
    for _ in range(20000):
        text = document(rng)
        check(text)
        got = plain_yaml.parse(text)
        taken += got is not plain_yaml.OTHER
        sections += isinstance(got, dict) and any(isinstance(v, dict) for v in got.values())
    assert taken > 1000 and sections > 50  # the subset is really exercised, not everything sent to PyYAML


@pytest.mark.parametrize("text", [
    "", "# only a comment\n", "a:\n", "a:\nb: 1\n", "timeouts:\n  connect: 5\n\n  action: 10.0\n",
    "timeouts:\n# c\n  connect: 5\n", "cluster: local (/tmp/x)\npool: rbd\n",
])
def test_subset_files(text: str) -> None:
    assert plain_yaml.parse(text) is not plain_yaml.OTHER
    check(text)


@pytest.mark.parametrize("text", [
    "a: yes\n", "a: null\n", "a: 1e3\n", "a: 0x1f\n", "a: 1:30\n", "a: '1'\n", "a: x # c\n", "a: 1\na: 2\n",
    "a: 1\n  b: 2\n", "t:\n    b: 1\n", "a: x \n", "a:\tx\n", "on: 1\n", "a: \x0c\n", "a: b\x0c\n", "\x0c\n",
])
def test_other_yaml_goes_to_pyyaml(text: str) -> None:
    assert plain_yaml.parse(text) is plain_yaml.OTHER


def test_config_dump_is_read_without_pyyaml() -> None:
    cfg = config.Config(conf="/etc/ceph/ceph.conf", keyring="/etc/ceph/k", client_id="ganeti",
                        cluster="local (/tmp/gct)", node="n1.example.com")
    text = config.dump(cfg)
    assert same(plain_yaml.parse(text), yaml.safe_load(text))


@pytest.mark.parametrize("value", VALUES)
def test_each_value_top_level_and_nested(value: str) -> None:
    for text in (f"k: {value}\n", f"t:\n  k: {value}\n", f"k:{value}\n"):
        check(text)
