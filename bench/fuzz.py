"""The long fuzzing run: many generated deliveries through a worker on each consumer
twin, counted by outcome; any crash, hang or disagreement between the twins is printed.

    python -m bench.fuzz [--examples 100000] [--seed N]

The suite runs the same property on a short deterministic profile
(``tests/unit/test_fuzz.py``); this one draws fresh inputs each run (``--seed`` repeats
one). Needs the ``dev`` extra (hypothesis).
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
import time

from hypothesis import HealthCheck, given, seed, settings

from fastq import protocol, serialization
from fastq.exceptions import MessageRejected
from fastq.testing import fuzzing
from fastq.worker import _consumer_py


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=None)
    options = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # every dead letter logs an error: millions of lines

    twins = [("py", _consumer_py.Consumer)]
    if os.environ.get("FASTQ_NO_SPEEDUPS") != "1":
        from fastq._speedups._consumer import Consumer as CompiledConsumer

        twins.append(("c", CompiledConsumer))
    workers = [(name, fuzzing.FuzzWorker(consumer, name)) for name, consumer in twins]
    accept = serialization.resolve_accept(fuzzing.ACCEPT)
    outcomes: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    slowest = [0.0]

    @settings(max_examples=options.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzzing.task_messages())
    def run(message):
        headers, properties, body = message
        started = time.monotonic()
        try:
            if not isinstance(headers, dict):  # brokers carry tables only: decoder alone
                try:
                    protocol.decode_task(headers, properties, body, accept)
                    outcomes["decoded (not a table)"] += 1
                except MessageRejected as exc:
                    outcomes[f"dead_lettered:{exc.reason}"] += 1
                return
            seen = {name: worker.outcome(headers, properties, body) for name, worker in workers}
            if len(set(seen.values())) != 1:
                problems.append(f"twins disagree {seen}: {fuzzing.describe(*message)}")
            outcomes[next(iter(seen.values()))] += 1
        except Exception as exc:  # noqa: BLE001 - counting crashes and hangs is the point
            problems.append(f"{type(exc).__name__}: {exc}: {fuzzing.describe(*message)}")
            outcomes["CRASH or HANG"] += 1
        finally:
            slowest[0] = max(slowest[0], time.monotonic() - started)

    if options.seed is not None:
        run = seed(options.seed)(run)
    started = time.monotonic()
    run()
    elapsed = time.monotonic() - started
    for _name, worker in workers:
        worker.close()
    total = sum(outcomes.values())
    print(f"{total} inputs in {elapsed:.0f} s on {', '.join(n for n, _ in workers)} "
          f"(slowest input {slowest[0] * 1000:.1f} ms):")
    for outcome, count in outcomes.most_common():
        print(f"  {count:8d}  {outcome}")
    print(f"crashes, hangs and twin disagreements: {len(problems)}")
    for line in problems[:20]:
        print("  " + line[:2000])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
