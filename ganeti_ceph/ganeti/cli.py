"""Ganeti's query and command interface: gnt-* on the master, `-o` fields parsed.

Parsing is pure and unit-tested; `Ganeti` runs the commands through the one
runner, each bounded by a timeout, and turns a failure into one line.
"""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
from dataclasses import dataclass

from ganeti_ceph import runner
from ganeti_ceph.errors import GanetiCephError, GanetiFailed, ToolFailed, UsageError
from ganeti_ceph.ganeti import ssconf

SEP = "|"


def condense(res: subprocess.CompletedProcess) -> str:
    """Ganeti's failure text, on one line (the last lines say what went wrong)."""
    lines = [ln.strip() for ln in f"{res.stdout}\n{res.stderr}".splitlines() if ln.strip()]
    detail = [ln for ln in lines if not ln.startswith(("Waiting for job", "Please don't forget"))][-3:]
    return " ".join(detail) or f"exit {res.returncode}"


def run_command(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a gnt-* command (found in the sbin dirs too: hooks get a bare PATH), bounded by `timeout`;
    its result whatever its exit code."""
    path = f"{os.environ.get('PATH', '')}:{runner.SYSTEM_PATH}"
    try:
        return runner.execute([runner.which(argv[0], path), *argv[1:]], shlex.join(argv), timeout,
                              env=runner.clean_env(path))
    except ToolFailed as exc:
        if exc.kind == "late":
            raise GanetiFailed(f"{shlex.join(argv)} did not finish within {timeout:.0f} s; its Ganeti job may "
                               "still run (gnt-job list)") from None
        if exc.kind == "missing":
            raise GanetiFailed(f"{argv[0]} not found: run this on the Ganeti master") from None
        raise GanetiFailed(exc.message) from None


@dataclass(frozen=True)
class GNode:
    name: str
    pip: str
    group: str
    offline: bool
    master: bool
    sip: str = ""  # Ganeti's secondary IP (the replication network); the primary when there is none

    @property
    def short(self) -> str:
        return self.name.split(".")[0]


def parse_nodes(text: str) -> list[GNode]:
    """`gnt-node list --no-headers --separator='|' -o name,pip,group,offline,master[,sip]`."""
    out = []
    for line in text.splitlines():
        if line.strip():
            name, pip, group, offline, master, *sip = line.split(SEP)
            out.append(GNode(name, pip, group, offline == "Y", master == "Y", sip[0] if sip else pip))
    return out


def parse_list(field: str) -> list[str]:
    """A list field of `gnt-* list -o`: Python's repr, ['a', 'b'] (names and tags cannot hold quotes)."""
    return [str(t) for t in ast.literal_eval(field)] if field else []


USAGE_FIELDS = ("name", "tags", "disk_template", "disk.sizes")


def parse_usage(text: str, tag: str, exclude: str = "") -> tuple[int, int]:
    """(MiB, disks) of the ext disks of the instances tagged `tag` but `exclude`, from
    `gnt-instance list --no-headers --separator='|' -o USAGE_FIELDS` (pure)."""
    mib = count = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        name, tags, template, sizes = line.split(SEP)
        tag_list = parse_list(tags) if tags.startswith("[") else [t for t in tags.split(",") if t]
        if name == exclude or template != "ext" or tag not in tag_list:
            continue
        disk_sizes = [int(x) for x in (parse_list(sizes) if sizes.startswith("[") else sizes.split(",")) if x]
        mib += sum(disk_sizes)
        count += len(disk_sizes)
    return mib, count


def parse_groups(text: str) -> dict[str, list[str]]:
    """`gnt-group list --no-headers --separator='|' -o name,tags` -> {group: tags}."""
    out = {}
    for line in text.splitlines():
        if line.strip():
            name, tags = line.split(SEP, 1)
            out[name] = parse_list(tags) if tags.startswith("[") else [t for t in tags.split(",") if t]
    return out


@dataclass(frozen=True)
class GDisk:
    """One disk of an instance, as `gnt-instance list` names it."""

    instance: str
    index: int
    uuid: str
    name: str  # "" when the disk has none


DISK_FIELDS = ("name", "disk.uuids", "disk.names")
DISK_SEP = "\x1f"  # disk names may hold "|"


def parse_instance_disks(text: str) -> list[GDisk]:
    """`gnt-instance list --no-headers --separator=DISK_SEP -o DISK_FIELDS` -> every instance's disks."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            name, uuids, names = line.split(DISK_SEP)
            values = ast.literal_eval(uuids) if uuids else []
            titles = ast.literal_eval(names) if names else []
            titles = list(titles) + [None] * (len(values) - len(titles))
        except (ValueError, SyntaxError, TypeError):
            raise GanetiFailed(f"unexpected gnt-instance list output: {line.strip()!r}") from None
        out += [GDisk(name, i, str(u), "" if t is None else str(t))
                for i, (u, t) in enumerate(zip(values, titles, strict=False))]
    return out


class Ganeti:
    """gnt-* commands on the master; `timeout` bounds each (Ganeti's job queue may be busy)."""

    def __init__(self, timeout: float = 120.0) -> None:
        self.timeout = timeout

    def _run(self, *argv: str) -> str:
        res = run_command(list(argv), self.timeout)
        if res.returncode != 0:
            raise GanetiFailed(f"{' '.join(argv[:2])} failed: {condense(res)}")
        return res.stdout

    def project_usage(self, tag: str, exclude: str = "") -> tuple[int, int]:
        """(MiB, disks) of the ext disks of the instances tagged `tag`, but instance `exclude`."""
        return parse_usage(self._run("gnt-instance", "list", "--no-headers", f"--separator={SEP}", "-o",
                                     ",".join(USAGE_FIELDS)), tag, exclude)

    def copy_file(self, path: str) -> None:
        """Copy `path` to every other node, as Ganeti copies its own files (gnt-cluster copyfile)."""
        self._run("gnt-cluster", "copyfile", path)

    def cluster_name(self) -> str:
        name = ssconf.value("cluster_name")
        if name is None:
            raise GanetiCephError("this node is not part of a Ganeti cluster (no ssconf); run on the master")
        return name

    def nodes(self) -> list[GNode]:
        return parse_nodes(self._run("gnt-node", "list", "--no-headers", f"--separator={SEP}",
                                     "-o", "name,pip,group,offline,master,sip"))

    def instance_disks(self) -> list[GDisk]:
        """Every instance's disks, in one query."""
        return parse_instance_disks(self._run("gnt-instance", "list", "--no-headers", f"--separator={DISK_SEP}",
                                              "-o", ",".join(DISK_FIELDS)))

    def groups(self) -> dict[str, list[str]]:
        return parse_groups(self._run("gnt-group", "list", "--no-headers", f"--separator={SEP}", "-o", "name,tags"))

    def cluster_tags(self) -> list[str]:
        return self._run("gnt-cluster", "list-tags").split()

    def add_cluster_tags(self, tags: list[str]) -> None:
        if tags:
            self._run("gnt-cluster", "add-tags", *tags)

    def remove_cluster_tags(self, tags: list[str]) -> None:
        if tags:
            self._run("gnt-cluster", "remove-tags", *tags)

    def add_group_tags(self, group: str, tags: list[str]) -> None:
        self._run("gnt-group", "add-tags", group, *tags)

    def remove_group_tags(self, group: str, tags: list[str]) -> None:
        if tags:
            self._run("gnt-group", "remove-tags", group, *tags)

    def require_group(self, group: str) -> dict[str, list[str]]:
        groups = self.groups()
        if group not in groups:
            raise UsageError(f"node group {group} does not exist (groups: {', '.join(sorted(groups))}); "
                             "create it with gnt-group add")
        return groups
