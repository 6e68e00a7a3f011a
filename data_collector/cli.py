"""`ganeti-ceph-collector`: print one report on stdout, as Ganeti's `mon-collector` does.

    ganeti-ceph-collector [--config PATH] [--timeout SECONDS] [--metrics | --raw]

Always prints a report, exit 0: a cluster that cannot be asked (or a broken
config) is a code-2 report, within the timeout. --raw prints the mon
commands' answers instead (what the unit tests' fixtures are made of).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from data_collector import gather, metrics, node, report
from ganeti_ceph import __version__, config
from ganeti_ceph.config import Config
from ganeti_ceph.errors import ArgumentParser, GanetiCephError, run_main
from ganeti_ceph.session import Session

PROG = "ganeti-ceph-collector"


def unknown_report(message: str, cluster: str = "ceph") -> dict[str, Any]:
    """A code-2 report when not even a config could be read, or time ran out."""
    facts = node.Facts(name=os.uname().nodename)
    return report.build(None, facts, cluster=cluster, version=__version__, error=message,
                        timestamp_ns=time.time_ns(), duration=0.0)


def one_report(cfg: Config) -> dict[str, Any]:
    """One report over a fresh session, bounded by gather.deadline even if a C call hangs."""
    collector = gather.Collector(cfg)

    def make() -> dict[str, Any]:
        try:
            return collector.report()
        finally:
            collector.close()

    return gather.bounded(make, gather.deadline(cfg), lambda why: unknown_report(why, cfg.cluster))


def raw_answers(cfg: Config) -> dict[str, Any]:
    with Session(cfg) as session:
        return gather.fetch(session)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=f"ganeti-ceph config (default ${config.ENV_VAR} or {config.DEFAULT_PATH})")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="cap, in seconds, on the connect and on each mon command (default 5)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--metrics", action="store_true", help="print Prometheus text instead of the report")
    out.add_argument("--raw", action="store_true", help="print the mon commands' raw answers (for fixtures)")
    args = parser.parse_args(argv)
    try:
        cfg = gather.with_timeout(config.load(args.config), args.timeout)
    except GanetiCephError as exc:
        if args.raw:
            raise
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        rep = unknown_report(exc.message)
    else:
        if args.raw:
            print(json.dumps(raw_answers(cfg), indent=1, sort_keys=True))
            return 0
        rep = one_report(cfg)
    sys.stdout.write(metrics.render(rep) if args.metrics else json.dumps(rep) + "\n")
    sys.stdout.flush()
    return 0


def entry() -> None:
    run_main(PROG, main)
