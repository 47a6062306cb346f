"""The long fuzzing run: many generated deliveries through a worker on each consumer
twin, counted by outcome; any crash, hang or disagreement between the twins is printed.

    python -m bench.fuzz [--examples 100000] [--seed N]
    python -m bench.fuzz --frames 2000 [--seed N]

``--frames N`` fuzzes the AMQP frame readers instead: N sessions with RabbitMQ
(127.0.0.1:5672) through a proxy that damages one frame, on each driver, counted by
outcome; a stray exception or a session over its time bound is a problem.

The suite runs the same property on a short deterministic profile
(``tests/unit/test_fuzz.py``); this one draws fresh inputs each run (``--seed`` repeats
one). Needs the ``dev`` extra (hypothesis).
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import resource
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
    parser.add_argument("--frames", type=int, default=0,
                        help="fuzz the AMQP frame readers with this many damaged sessions")
    options = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # every dead letter logs an error: millions of lines
    if options.frames:
        return fuzz_frames(options.frames, options.seed)

    twins = [("py", _consumer_py.Consumer)]
    if os.environ.get("FASTQ_NO_SPEEDUPS") != "1":
        from fastq._speedups._consumer import Consumer as CompiledConsumer

        twins.append(("c", CompiledConsumer))
    workers = [(name, fuzzing.FuzzWorker(consumer, name)) for name, consumer in twins]
    accept = serialization.resolve_accept(fuzzing.ACCEPT)
    outcomes: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    slowest = [0.0]

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

    started = time.monotonic()
    run_in_batches(run, fuzzing.task_messages(), options.examples, options.seed)
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
    print(peak_rss())
    return 1 if problems else 0


#: Inputs per Hypothesis run: each run's engine keeps every input it drew (its tree of
#: choices), so one 100,000-input run grew past 900 MB; runs of this size, one after the
#: other, each with a fresh engine, keep the peak near that of a single batch.
BATCH = 1000


def run_in_batches(test, strategy, examples: int, seed_value: int | None) -> None:
    """``test`` on ``examples`` inputs drawn from ``strategy``, BATCH at a time (batch i
    seeded ``seed_value + i`` when a seed is given, so a seeded run repeats)."""
    for index, start in enumerate(range(0, examples, BATCH)):
        batch = settings(max_examples=min(BATCH, examples - start), deadline=None,
                         database=None, suppress_health_check=list(HealthCheck))(
            given(strategy)(test))
        if seed_value is not None:
            batch = seed(seed_value + index)(batch)
        batch()


def peak_rss() -> str:
    """The process's peak resident memory, as the run's last line."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    mib = peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    return f"peak RSS: {mib:.0f} MiB"


#: a damaged session's own waits add up to about 4 s; past this it is a hang
FRAME_SESSION_BOUND = 6.0


def fuzz_frames(examples: int, seed_value: int | None) -> int:
    from fastq.brokers._amqp_py import Connection as PyConnection

    drivers = [("py-amqp", PyConnection)]
    if os.environ.get("FASTQ_NO_SPEEDUPS") != "1":
        from fastq._speedups._amqp import Connection as CConnection

        drivers.insert(0, ("rabbitmq-c", CConnection))
    outcomes: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    slowest = [0.0]

    def run(damage):
        for name, driver in drivers:
            started = time.monotonic()
            try:
                outcome = fuzzing.damaged_session(driver, ("127.0.0.1", 5672), damage)
            except Exception as exc:  # noqa: BLE001 - counting stray exceptions is the point
                problems.append(f"{name} {damage}: {type(exc).__name__}: {exc}")
                outcome = "STRAY EXCEPTION"
            took = time.monotonic() - started
            slowest[0] = max(slowest[0], took)
            if took > FRAME_SESSION_BOUND:
                problems.append(f"{name} {damage}: {outcome} after {took:.1f} s")
            outcomes[f"{name}: {outcome}"] += 1

    started = time.monotonic()
    run_in_batches(run, fuzzing.frame_damages(), examples, seed_value)
    print(f"{examples} damaged sessions per driver in {time.monotonic() - started:.0f} s "
          f"(slowest {slowest[0]:.2f} s):")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {count:8d}  {outcome}")
    print(f"stray exceptions and hangs: {len(problems)}")
    for line in problems[:20]:
        print("  " + line[:2000])
    print(peak_rss())
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
