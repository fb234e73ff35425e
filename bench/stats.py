"""/stats over the six containers of the live test stack vs one container's stats sample.

Run from the repository root (the stack must be up: tests/stack/up):
    .venv/bin/python bench/stats.py [--rounds 5]

A `docker stats` sample of one container takes one to two seconds (the engine waits for a second CPU
reading); /stats samples every container, reads the logs, the database and Redis. Sampled side by side,
the whole /stats should cost little more than one sample: target <= 1.3x. Rounds alternate the two.
Prints a table; exits 0 whatever the verdict (a measurement, not a test).
"""

from __future__ import annotations

import argparse
import statistics
import sys

from common import USER, live_runtime, timed

from bot.frame.registry import Invocation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runtime, _stack = live_runtime()
    containers = [container for _service, container in runtime.stack.compose.containers()]
    if len(containers) != 6:
        raise SystemExit(f"expected the six containers of the test stack, found {len(containers)}; run tests/stack/up")
    one = next(c for c in containers if c.name.endswith("_backend_1"))
    stats = Invocation(USER, "stats", "15m", "CBENCH")

    def whole() -> None:
        text = runtime.pipeline.dispatch(stats).text
        if "Could not read it" in text or "No answer within" in text:
            raise SystemExit(f"a metric could not be read:\n{text}")

    whole()
    singles, totals = [], []
    for _ in range(args.rounds):
        singles.append(timed(lambda: one.stats(stream=False)))
        totals.append(timed(whole))
    runtime.close()

    ratios = [total / single for total, single in zip(totals, singles)]
    ratio = statistics.median(ratios)
    print(f"{'measure':<40}{'median':>10}{'max':>10}")
    print(f"{'one container stats sample (s)':<40}{statistics.median(singles):>10.3f}{max(singles):>10.3f}")
    print(f"{'whole /stats, 6 containers (s)':<40}{statistics.median(totals):>10.3f}{max(totals):>10.3f}")
    print(f"{'ratio whole / one sample':<40}{ratio:>10.2f}{max(ratios):>10.2f}")
    print()
    print(f"verdict: median {ratio:.2f}x (target <= 1.30x): {'met' if ratio <= 1.3 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
