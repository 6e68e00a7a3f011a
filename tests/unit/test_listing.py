"""The shared gnt-* list module (gnt_storage/cli/_listing.py): what every command group's list and show rely on."""

from __future__ import annotations

import argparse

import pytest

from ganeti_ceph.errors import UsageError
from gnt_storage.cli import _listing
from gnt_storage.cli._listing import Field

FIELDS = {"name": Field("Name"), "size": Field("Size", numeric=True, mib=True), "provisioned": Field("Provisioned")}


def test_cell_none_sizes_text() -> None:
    assert _listing.cell(None, FIELDS["size"], "h") == "-"
    assert _listing.cell(1536, FIELDS["size"], "h") == "1.5G"
    assert _listing.cell(1536.4, FIELDS["size"], "m") == "1536"
    assert _listing.cell(1536, FIELDS["name"], "h") == "1536"  # not a size: as it is
    assert _listing.cell("", FIELDS["name"], "h") == ""


def test_show_header_value_lines() -> None:
    """Values start past the longest header (`Provisioned:` and one space), or at a given width; a size in the
    units asked for, an unknown value '-'."""
    row = {"name": "a", "size": 2048}
    assert _listing.show(row, FIELDS, FIELDS) == ["Name:        a", "Size:        2.0G", "Provisioned: -"]
    assert _listing.show(row, ("size",), FIELDS, "m", width=14) == ["Size:         2048"]


def test_options_refused_in_one_line() -> None:
    parser = argparse.ArgumentParser()
    _listing.add_options(parser, FIELDS, ("name",), units=False)
    assert _listing.check_options(parser.parse_args(["-o", "+size"]), FIELDS, ("name",)) == ("name", "size")
    assert _listing.check_options(parser.parse_args([]), FIELDS, ("name",)) == ("name",)
    with pytest.raises(SystemExit):
        parser.parse_args(["--units", "g"])  # a list without sizes in MiB has no --units
    for argv, text in ((["-o", "name,colour"], "--output: unknown field(s) colour; fields: name, size, provisioned"),
                       (["-o", ""], "--output: unknown field(s) ''; fields: name, size, provisioned"),
                       (["--separator="], "--separator: give a non-empty separator")):
        with pytest.raises(UsageError) as err:
            _listing.check_options(parser.parse_args(argv), FIELDS, ("name",))
        assert err.value.message == text
