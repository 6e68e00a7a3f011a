"""ganeti-ceph: hooks (see doc/hooks.md)."""


def say(text: str) -> None:
    """What a hook did, on stdout (Ganeti logs hook output)."""
    print(f"ganeti-ceph: {text}", flush=True)
