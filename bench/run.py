"""Benchmarks: our tools side by side with what an admin would run by hand.

Each registered bench times our way and a baseline in the same run,
interleaved (ours first on even runs, baseline first on odd ones) so machine
drift and cache warm-up hit both sides alike, and reports the medians.
Results go to bench/results.json as [{name, ours_s, baseline, baseline_s, ratio}].

    .venv/bin/python bench/run.py [--runs N] [--only NAME [--only NAME...]] [--out PATH]

Benches: local-cluster-up here; the provider actions (each a whole process,
versus the rbd CLI) in bench/provider.py; the same from the installed .deb,
in a Debian chroot, with and without its agent, in bench/packaged.py; placement, backend list and
the placement records at scale in bench/backends.py;
init-distributed-storage on a
3-node Ganeti test bed, from scratch and re-run, in bench/distributed.py
(alone: --only init-distributed-storage --only init-distributed-storage-rerun); fio through each
access path against fio's rbd engine in a kernel VM, the datapath-* rows of bench/datapath.py
(doc/benchmarks.md). To add one, decorate
`fn(ctx: Ctx) -> dict` with `@bench("name")` and return `compare(...)` (see
bench/harness.py); clusters come from `ctx.slot()` or `ctx.shared` and are
always torn down.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from harness import (
    BENCHES,
    GNT_STORAGE,
    REPO,
    BenchError,
    Ctx,
    Result,
    Shared,
    bench,
    compare,
    kill_cluster,
    log,
    run_quiet,
    time_cmd,
)

from ganeti_ceph import atomic  # importable once harness put the repo on sys.path

MANUAL_BOOTSTRAP = os.path.join(REPO, "bench", "manual-bootstrap.sh")


@bench("local-cluster-up", runs=3)
def local_cluster_up(ctx: Ctx) -> Result:
    """The whole `gnt-storage local-cluster up` process until it returns at HEALTH_OK, versus the
    same cluster brought up by hand, step by step with the stock CLI (bench/manual-bootstrap.sh)."""
    ours_dir, ours_port = ctx.slot("local-cluster-up-ours")
    base_dir, base_port = ctx.slot("local-cluster-up-manual")

    def ours() -> float:
        try:
            return time_cmd([GNT_STORAGE, "local-cluster", "up", "--dir", ours_dir, "--port", str(ours_port)])
        finally:
            run_quiet([GNT_STORAGE, "local-cluster", "down", "--dir", ours_dir])
            kill_cluster(ours_dir)

    def manual() -> float:
        try:
            return time_cmd([MANUAL_BOOTSTRAP, base_dir, str(base_port)])
        finally:
            kill_cluster(base_dir)

    return compare("local-cluster-up", "manual-bootstrap", ctx.runs, ours, manual)


# The provider benches register after local-cluster-up, so they run (and are listed) after it.
import collector  # noqa: E402, F401
import ganeti_add  # noqa: E402, F401
import provider  # noqa: E402, F401

# isort: split
import backends  # noqa: E402, F401  (after provider: it uses the same cluster)

# isort: split
import packaged  # noqa: E402, F401  (after provider: it uses the same cluster)

# isort: split
import datapath  # noqa: E402, F401  (its kernel VM stops after its last row, before the bed below)

# isort: split
# Last: its 3-node test bed, shared by its two benches, stays up until the run ends.
import distributed  # noqa: E402, F401

# -- main ---------------------------------------------------------------------

def table(results: list[Result]) -> str:
    w = max(24, *(len(str(r["name"])) for r in results))
    head = f"{'name':<{w}} {'ours_s':>9}  {'baseline':<20} {'baseline_s':>10} {'ratio':>7}"
    rows = [f"{r['name']:<{w}} {r['ours_s']:>9.3f}  {r['baseline']:<20} {r['baseline_s']:>10.3f} {r['ratio']:>7.3f}"
            for r in results]
    return "\n".join([head, "-" * len(head), *rows])


def write_results(path: str, results: list[Result], merge: bool) -> None:
    """Write results; with --only, keep the other benches' rows from the previous file."""
    if merge and os.path.exists(path):
        with open(path) as fh:
            old = {r["name"]: r for r in json.load(fh)}
        old.update({r["name"]: r for r in results})
        order = [b.name for b in BENCHES]
        results = sorted(old.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    atomic.write(path, json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int,
                        help="samples per side (default: per bench, 3 for local-cluster-up, 5 for provider actions)")
    parser.add_argument("--only", action="append", choices=[b.name for b in BENCHES],
                        help="run only this bench (repeat for several)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results.json"), help="results file")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally below still stops every cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: list[Result] = []
    failed: list[str] = []
    shared = Shared()
    try:
        for b in BENCHES:
            if args.only and b.name not in args.only:
                continue
            ctx = Ctx(runs=args.runs or b.runs, shared=shared)
            log(f"{b.name}: {ctx.runs} runs per side")
            try:
                results.append(b.fn(ctx))
            except BenchError as exc:
                log(f"{b.name} FAILED: {exc}")
                failed.append(b.name)
            finally:
                ctx.teardown()
    except KeyboardInterrupt:
        log("interrupted; stopping clusters")
        return 130
    finally:
        shared.close()
    if results:
        write_results(args.out, results, merge=bool(args.only))
        print(table(results), file=sys.stderr)
        log(f"wrote {args.out}")
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
