"""Peak memory of a call, as tracemalloc sees it: for tests that bound what a computation
holds at once (timing belongs in benchmarks/, memory is deterministic enough to assert)."""

import tracemalloc


def peak_bytes(run) -> int:
    """The peak number of bytes allocated while run() runs (tracing starts with the call, so
    what was allocated before does not count)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
