"""Ganeti cluster-verify post hook: Ceph's health as one line of `gnt-cluster verify`.

    Ceph cluster <name>: HEALTH_WARN (code 1: self-healing: OSD_DOWN: 1 osds down [osd.1])

Installed as /etc/ganeti/hooks/cluster-verify-post.d/60-ganeti-ceph-health.
The report comes from the node's ganeti-ceph-mond if it answers, else from a
one-shot collection bounded by --timeout. The hook changes nothing.

Ganeti 3.0 prints a post hook's output only when the hook fails
(cmdlib/cluster/verify.py, HooksCallBack), so the hook exits 1 when the status
code is not 0: verify then shows the line (as ENODEHOOKS) and says the cluster
needs a look. A healthy Ceph exits 0 and verify stays quiet about it.
`--exit-zero` always exits 0 (report only, e.g. when run by hand or wrapped).
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from data_collector import CATEGORY, NAME, cli, daemon, gather
from data_collector.report import OK
from ganeti_ceph import config
from ganeti_ceph.errors import ArgumentParser, GanetiCephError, run_main

PROG = "ganeti-ceph-verify-hook"


def line(rep: dict[str, Any]) -> str:
    """The one line verify shows."""
    data = rep.get("data", {})
    cluster = data.get("cluster", {}).get("name", "ceph")
    health = data.get("health", {}).get("status") or "HEALTH_UNKNOWN"
    status = data.get("status", {})
    return f"Ceph cluster {cluster}: {health} (code {status.get('code', 2)}: {status.get('message', 'no report')})"


def from_daemon(bind: str, port: int, timeout: float) -> dict[str, Any] | None:
    """The running ganeti-ceph-mond's latest report, or None if none answers."""
    host = f"[{bind}]" if ":" in bind else bind
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/1/report/{CATEGORY}/{NAME}", timeout=timeout) as res:
            rep = json.loads(res.read())
    except (OSError, ValueError):
        return None
    return rep if isinstance(rep, dict) and rep.get("name") == NAME else None


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=f"ganeti-ceph config (default {config.DEFAULT_PATH})")
    parser.add_argument("--port", type=int, default=daemon.DEFAULT_PORT, help="ganeti-ceph-mond's port")
    parser.add_argument("--timeout", type=float, default=3.0, help="cap on connect and each mon command (default 3)")
    parser.add_argument("--exit-zero", action="store_true", help="exit 0 whatever the health (report only)")
    args = parser.parse_args(argv)
    # The daemon serves the default config's cluster: asked only when no other config is named.
    rep = None if args.config else from_daemon(daemon.default_bind(), args.port, timeout=2.0)
    if rep is None:
        try:
            rep = cli.one_report(gather.with_timeout(config.load(args.config), args.timeout))
        except GanetiCephError as exc:
            rep = cli.unknown_report(exc.message)
    print(line(rep), flush=True)
    return 0 if args.exit_zero or rep.get("data", {}).get("status", {}).get("code") == OK else 1


def entry() -> None:
    run_main(PROG, main)


if __name__ == "__main__":
    entry()
