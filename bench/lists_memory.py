"""Memory and time of the list snapshot at scale (a measurement, not a test).

Builds a snapshot of N random IMEIs (default 10 million) through SnapshotBuilder,
then prints the build time, bytes per IMEI and the cost of Bloom-negative and
positive lookups. Run from the repository root:

    PYTHONPATH=src .venv/bin/python bench/lists_memory.py --n 2000000
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import time
from array import array

from s13eir.decision.engine import decide
from s13eir.decision.model import NO_FACTS, ListKind, UnknownPolicy
from s13eir.lists.snapshot import SnapshotBuilder

REASONS = ("IMEI found on local stolen list", "duplicate IMEI detected", "reported lost by subscriber")


def rss_bytes() -> int:
    """Current resident set size (Linux); falls back to the peak elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="IMEIs on the list (default 10,000,000)")
    parser.add_argument("--lookups", type=int, default=200_000, help="lookups per measurement")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--clustered",
        action="store_true",
        help="draw IMEIs from 2,000 TACs starting 35 or 86, like real lists, instead of uniformly",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    n = args.n

    gc.collect()
    rss_before = rss_bytes()
    sample: array[int] = array("q")  # every k-th listed IMEI, for positive lookups
    keep_every = max(1, n // args.lookups)

    t0 = time.perf_counter()
    builder = SnapshotBuilder()
    add = builder.add_imei
    black = ListKind.BLACK
    tacs = [rng.choice((35, 35, 35, 35, 86)) * 10**6 + rng.randrange(10**6) for _ in range(2000)]
    for i in range(n):
        if args.clustered:
            key = tacs[rng.randrange(2000)] * 10**6 + rng.randrange(10**6)
        else:
            key = rng.randrange(10**13, 10**14)
        add(f"{key:014d}", black, "config/lists/blacklist.csv", REASONS[i % 3])
        if i % keep_every == 0:
            sample.append(key)
    t1 = time.perf_counter()
    snapshot = builder.build()
    t2 = time.perf_counter()
    del builder, add
    gc.collect()
    rss_after = rss_bytes()

    counts = snapshot.counts()
    held = rss_after - rss_before - sample.buffer_info()[1] * sample.itemsize
    print(f"IMEIs added            {n:,} ({counts['black']:,} distinct entries)")
    print(f"add rows               {t1 - t0:8.2f} s  ({(t1 - t0) / n * 1e9:,.0f} ns/row incl. random IMEI)")
    print(f"build (sort+bloom)     {t2 - t1:8.2f} s")
    mem = snapshot.memory_bytes()
    print(f"memory_bytes()         {mem / n:8.2f} bytes/IMEI ({mem / 2**20:,.1f} MiB)")
    print(f"RSS delta after build  {held / n:8.2f} bytes/IMEI ({held / 2**20:,.1f} MiB)")
    print(f"peak RSS               {peak_rss_bytes() / 2**20:8,.1f} MiB")

    positives = [f"{key:014d}" for key in sample]
    # Random IMEIs, nearly all unlisted; with --clustered they share TACs with the listed ones.
    if args.clustered:
        negatives = [f"{tacs[rng.randrange(2000)] * 10**6 + rng.randrange(10**6):014d}" for _ in range(args.lookups)]
    else:
        negatives = [f"{rng.randrange(10**13, 10**14):014d}" for _ in range(args.lookups)]

    policy = UnknownPolicy.WHITELISTED
    facts = snapshot.facts

    def per_call(keys: list[str], with_decide: bool) -> float:
        """Best of three passes, in ns per lookup (the loop itself included)."""
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            if with_decide:
                for k in keys:
                    decide(facts(k, None), None, policy, k)
            else:
                for k in keys:
                    facts(k, None)
            best = min(best, time.perf_counter() - start)
        return best / len(keys) * 1e9

    no_facts = sum(1 for k in negatives if facts(k, None) is NO_FACTS)
    snapshot.stats.positives = snapshot.stats.negatives = snapshot.stats.false_positives = 0
    print(f"lookup random (neg.)   {per_call(negatives, False):8.0f} ns  facts()")
    print(f"lookup positive        {per_call(positives, False):8.0f} ns  facts()")
    print(f"facts+decide random    {per_call(negatives, True):8.0f} ns")
    print(f"facts+decide positive  {per_call(positives, True):8.0f} ns")
    stats = snapshot.stats
    fp_rate = stats.false_positives / (6 * len(negatives))
    print(
        f"bloom                  {stats.negatives:,} negative, {stats.positives:,} positive, "
        f"{stats.false_positives:,} false positive ({fp_rate:.4%} of random-IMEI lookups); "
        f"{no_facts:,}/{len(negatives):,} random IMEIs were on no list (NO_FACTS)"
    )


if __name__ == "__main__":
    main()
