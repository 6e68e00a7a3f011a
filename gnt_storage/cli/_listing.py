"""gnt-* style lists, shared by the command groups: `--output`, `--no-headers`, `--separator`, `--units`.

Pure: rows are dicts of field -> value (sizes as MiB ints, None when unknown),
lines come out as Ganeti's cli.GenerateTable prints them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ganeti_ceph.errors import UsageError

UNITS = ("h", "m", "g", "t")


@dataclass(frozen=True)
class Field:
    header: str
    numeric: bool = False  # right-aligned
    mib: bool = False  # a size in MiB, shown in --units


def add_options(parser: argparse.ArgumentParser, fields: Mapping[str, Field], default: tuple[str, ...],
                units: bool = True) -> None:
    """`--output`, `--no-headers`, `--separator` and (unless the list has no sizes in MiB) `--units`."""
    parser.add_argument("-o", "--output", metavar="FIELDS", default=",".join(default),
                        help=f"comma-separated fields, or +f1,f2 to add to the defaults; fields: {', '.join(fields)} "
                             f"(default: {','.join(default)})")
    parser.add_argument("--no-headers", action="store_true", help="no header line")
    parser.add_argument("--separator", metavar="S",
                        help="separate fields by S, unpadded" + (" (sizes then in MiB)" if units else ""))
    if units:
        add_units(parser)


def add_units(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--units", choices=UNITS,
                        help="sizes in h (human: M, G, T), m, g or t (default: h, or m with --separator)")


def check_fields(text: str, fields: Mapping[str, Field], default: tuple[str, ...]) -> tuple[str, ...]:
    """`--output f1,f2` (or `+f1,f2`: the defaults and these) -> field names; an unknown one is one line."""
    extra = text.startswith("+")
    names = tuple(f.strip() for f in text.removeprefix("+").split(",") if f.strip())
    unknown = [f for f in names if f not in fields]
    if unknown or not names:
        raise UsageError(f"--output: unknown field(s) {', '.join(unknown) or repr(text)}; "
                         f"fields: {', '.join(fields)}")
    return (*default, *(f for f in names if f not in default)) if extra else names


def check_options(args: argparse.Namespace, fields: Mapping[str, Field], default: tuple[str, ...]) -> tuple[str, ...]:
    """The field names of `--output`, `--separator` checked too: bad input refused before anything is read."""
    names = check_fields(args.output, fields, default)
    check_separator(args.separator)
    return names


def check_separator(separator: str | None) -> None:
    if separator == "":
        raise UsageError("--separator: give a non-empty separator")


def format_unit(mib: float, units: str) -> str:
    """MiB as Ganeti's FormatUnit shows them: h scales (M, G, T), m/g/t are plain numbers."""
    if units == "m" or (units == "h" and mib < 1024):
        return f"{mib:.0f}{'M' if units == 'h' else ''}"
    if units == "g" or (units == "h" and mib < 1024 * 1024):
        return f"{mib / 1024:.1f}{'G' if units == 'h' else ''}"
    return f"{mib / 1024 / 1024:.1f}{'T' if units == 'h' else ''}"


def cell(value: object, field: Field, units: str) -> str:
    """One value as a list shows it: None as '-', a size in MiB in `units`, the rest as text."""
    if value is None:
        return "-"
    if field.mib and isinstance(value, int | float):
        return format_unit(value, units)
    return str(value)


def show(row: Mapping[str, object], names: Iterable[str], fields: Mapping[str, Field], units: str = "h",
         width: int | None = None) -> list[str]:
    """One item's fields, one `Header: value` line each, the values from `width` (default: past the
    longest header of `fields`)."""
    width = width or max(len(f.header) for f in fields.values()) + 2
    return [f"{fields[n].header + ':':{width - 1}} {cell(row.get(n), fields[n], units)}" for n in names]


def table(rows: Iterable[Mapping[str, object]], names: tuple[str, ...], fields: Mapping[str, Field],
          headers: bool = True, separator: str | None = None, units: str | None = None) -> list[str]:
    """Lines as Ganeti's gnt-* list prints them: without a separator, columns padded to their widest
    cell, numbers right-aligned, the last column unpadded; with one, cells joined by it. Units:
    human (h) without a separator, MiB (m) with one, unless given."""
    check_separator(separator)
    unit = units or ("m" if separator is not None else "h")
    data = [[cell(r.get(n), fields[n], unit) for n in names] for r in rows]
    if headers:
        data.insert(0, [fields[n].header for n in names])
    if separator is not None:
        return [separator.join(line) for line in data]
    widths = [max((len(line[i]) for line in data), default=0) for i in range(len(names))]
    if names and not fields[names[-1]].numeric:
        widths[-1] = 0
    return [" ".join(c.rjust(w) if fields[n].numeric else c.ljust(w) for c, w, n in zip(line, widths, names,
                                                                                         strict=True)).rstrip()
            for line in data]
