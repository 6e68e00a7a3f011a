"""Per-image I/O rates from the rbd_support mgr module (what `rbd perf image iostat` shows).

One `rbd perf image stats` command a pool answers for all its images; images
without recent I/O are not listed. The collector shows them per instance
disk, `gnt-storage backend list|top` sums them per backend.
"""

from __future__ import annotations

from typing import Any

IMAGE_STATS = "rbd perf image stats"
RATE_KEYS = ("read_bytes_sec", "write_bytes_sec", "read_op_per_sec", "write_op_per_sec")


def image_io(answers: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """pool -> image -> I/O rates, from the mgr's `rbd perf image stats` answer per pool (ops and bytes
    per second, latencies in ns; each keys its images "<pool index>/[<namespace>/]<image>"). A pool
    that answered is there even without I/O; one that did not answer is not."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for pool, stats in answers.items():
        pools_by_idx, names = stats.get("pool_descriptors") or {}, stats.get("stat_descriptors") or []
        out[pool] = {}
        for entry in stats.get("stats") or []:
            for key, values in entry.items():
                idx, _, image = key.partition("/")
                if idx in pools_by_idx and image:
                    out.setdefault(pools_by_idx[idx], {})[image] = dict(zip(names, values, strict=False))
    return out


def location_io(io: dict[str, dict[str, dict[str, float]]], location: str) -> dict[str, float]:
    """The summed rates of the images of one pool or `pool/namespace` (pure)."""
    pool, _, namespace = location.partition("/")
    total = dict.fromkeys(RATE_KEYS, 0.0)
    for image, rates in (io.get(pool) or {}).items():
        ns, _, _name = image.rpartition("/")
        if ns == namespace:
            for k in RATE_KEYS:
                total[k] += float(rates.get(k) or 0)
    return total
