"""The long run of tests/lists/test_store_equivalence.py: the differential state machine
(nodes on real Redis, mosquitto and ``s13eir sync`` against the reference computed by
``decision/``) for thousands of steps, alternating one node on one redis-server and
two nodes on a 3-master Redis Cluster, each round with a new seed, printed.

    .venv/bin/python bench/store_equivalence.py [--minutes 30] [--examples 5] [--steps 25]

Prints, per round, the variant, the seed, the steps run and the rules they exercised,
then the totals. Exits 1 at the first divergence, with its seed: rerun it with
``--seed S --rounds 1`` (Hypothesis prints the shrunk steps).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from hypothesis.errors import FlakyStrategyDefinition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lists import test_store_equivalence as T  # noqa: E402

from s13eir.observability.logs import configure_logging  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="stop starting rounds after this long")
    ap.add_argument("--rounds", type=int, default=10_000)
    ap.add_argument("--examples", type=int, default=5, help="machine runs per round")
    ap.add_argument("--steps", type=int, default=25, help="steps per machine run (at most)")
    ap.add_argument("--seed", type=int, default=None, help="the first round's seed")
    ap.add_argument("--no-shrink", action="store_true", help="report the first failure as it happened")
    ap.add_argument("--variant", choices=["alternate", "single", "cluster"], default="alternate")
    args = ap.parse_args()
    configure_logging("error", "console")  # the nodes' own lines would drown the rounds
    deadline = time.monotonic() + args.minutes * 60
    total: Counter[str] = Counter()
    seeds: list[str] = []
    flakes: list[str] = []
    t0 = time.monotonic()
    for i in range(args.rounds):
        if time.monotonic() > deadline:
            break
        seed = args.seed if (i == 0 and args.seed is not None) else random.SystemRandom().randrange(2**32)
        cluster = args.variant == "cluster" or (args.variant == "alternate" and i % 2 == 1)
        nodes = 2 if cluster else 1
        variant = f"{nodes} node{'s' if nodes > 1 else ''} on {'a 3-master cluster' if cluster else 'one redis-server'}"
        T.STATS.clear()
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="s13eir-eqv-") as d:
            try:
                T.run_machine(Path(d), nodes=nodes, cluster=cluster, examples=args.examples, steps=args.steps,
                              seed=seed, shrink=not args.no_shrink)  # fmt: skip
            except FlakyStrategyDefinition as exc:
                # Hypothesis saw a replayed prefix offer other rules (a precondition read
                # state that a background process, s13eir sync, moved meanwhile): the round
                # says nothing about the store either way. Counted and reported, not hidden.
                flakes.append(str(seed))
                print(f"round {i + 1}: {variant}, seed {seed}: harness flake after {T.STATS['steps']} steps "
                      f"(not a divergence: {type(exc).__name__}); next round", flush=True)  # fmt: skip
                total.update(T.STATS)
                continue
            except BaseException as exc:
                print(f"round {i + 1}: {variant}, seed {seed}: DIVERGENCE after {T.STATS['steps']} steps:")
                traceback.print_exception(exc)
                # The steps replay from the seed; a divergence that needs a race may not.
                print(
                    f"  rerun: .venv/bin/python bench/store_equivalence.py --seed {seed} --rounds 1 "
                    f"--variant {'cluster' if cluster else 'single'}"
                )
                sys.exit(1)
        total.update(T.STATS)
        seeds.append(str(seed))
        rules = ", ".join(f"{k} {v}" for k, v in sorted(T.STATS.items()) if k != "steps")
        print(f"round {i + 1}: {variant}, seed {seed}: {T.STATS['steps']} steps in "
              f"{time.monotonic() - started:.0f} s ({rules})", flush=True)  # fmt: skip
    print(f"total: {total['steps']} steps in {len(seeds)} rounds, {time.monotonic() - t0:.0f} s, no divergence")
    print(f"seeds: {' '.join(seeds)}")
    if flakes:
        print(f"harness flakes (rounds cut short, steps counted above): {' '.join(flakes)}")
    kinds: Counter[str] = Counter()
    for k, v in total.items():
        if k != "steps":
            kinds[k.split(" (")[0]] += v
    print("steps by kind (count; longest wait for every node to catch up):")
    for k, v in sorted(kinds.items()):
        print(f"  {k}: {v}; {T.PROPAGATION_S.get(k, 0.0):.2f} s")


if __name__ == "__main__":
    main()
