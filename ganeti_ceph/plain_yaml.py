"""The YAML our config files are written in, read without importing PyYAML.

Importing yaml costs a no-agent provider call more than parsing its config
(its regexes are compiled at import): a tenth of the call. `config.dump`
writes block mappings of plain scalars, one level of nesting (timeouts), so
`parse` reads exactly that and nothing else: `key: value` lines (a nested
one indented two spaces under a `key:` line), blank and comment lines, and
values that are whole decimal numbers, decimals like 10.0, or words and paths
that YAML reads as text. For those, the result is what yaml.safe_load
returns (tests/unit/test_plain_yaml.py compares them on generated files);
anything else (quotes, lists, flow style, other indents, yes/no/null, exponents,
a key given twice, non-ASCII...) is OTHER, and the caller asks PyYAML.
"""

from __future__ import annotations

import re
from typing import Any

OTHER: Any = object()  # not in the subset: let yaml.safe_load read it (and say what is wrong)

_PRINTABLE = re.compile(r"[\x20-\x7e\n]*")  # no tab, CR, control character or non-ASCII
_KEY = r"[a-z_][a-z0-9_]*"
_WORD = r"[A-Za-z0-9_./()+-]+"
_VALUE = rf"{_WORD}(?: {_WORD})*"
_LINE = re.compile(rf"(  )?({_KEY}):(?: ({_VALUE}))?")
_INT = re.compile(r"0|[1-9][0-9]*")
_FLOAT = re.compile(r"[0-9]+\.[0-9]+")
_TEXT = re.compile(r"[A-Za-z/][A-Za-z0-9_./()+ -]*")
# Words YAML 1.1 (PyYAML) reads as booleans or null: those go to PyYAML.
_NOT_TEXT = re.compile(r"yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|null|Null|NULL")


def _scalar(text: str) -> Any:
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _TEXT.fullmatch(text) and not _NOT_TEXT.fullmatch(text):
        return text
    return OTHER


def parse(text: str) -> Any:
    """The mapping in `text` if it is in the subset above (None for a file of only comments and
    blank lines, as YAML has it); else OTHER."""
    if not _PRINTABLE.fullmatch(text):
        return OTHER
    data: dict[str, Any] = {}
    section: dict[str, Any] | None = None  # the mapping of the last `key:` line without a value
    for line in text.split("\n"):
        if not line.strip(" ") or line.lstrip(" ").startswith("#"):
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            return OTHER
        nested, key, raw = m.groups()
        if _scalar(key) is OTHER:
            return OTHER
        if nested:
            if section is None or raw is None or key in section:
                return OTHER
            section[key] = _scalar(raw)
            if section[key] is OTHER:
                return OTHER
            continue
        if key in data:
            return OTHER
        if raw is None:  # a section, or null if no nested line follows
            section = data[key] = {}
            continue
        section = None
        data[key] = _scalar(raw)
        if data[key] is OTHER:
            return OTHER
    if not data:
        return None
    return {k: (v if v != {} else None) for k, v in data.items()}
