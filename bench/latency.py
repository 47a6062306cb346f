"""Round trip of one task at a time, ``delay(...).get()``: fastq vs Celery, in microseconds.

    python -m bench.latency [-n 2000] [--runs 1] [--only fastq,celery,bare]

Both run one solo worker on RabbitMQ with results in Redis (SETEX + PUBLISH, read by a
subscribed waiter) or, with BENCH_RESULT_URL=rpc://, sent back over AMQP to the caller's
reply queue. Prints p50/p90/p99/max; with ``--runs`` above one, each run takes every
flavour in turn (so a noisy minute touches them all alike) and a last table gives the
median of each percentile over the runs, the range of p50, and p50 against ``bare``'s.

``bare`` is the broker's floor for the rpc round trip: the rabbitmq-c driver publishes a
persistent message with ``reply_to`` (no confirm, as Celery publishes), ``bench.bare echo``
publishes it back and acks, and the caller reads it from its exclusive reply queue: the
same four broker hops as ``delay().get()`` over rpc://, with no task queue in between.
``bare-confirm`` is that floor with a publisher confirm awaited after each publish, as
fastq's ``delay()`` does by default (``confirm_publish``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_URL = os.environ.get("BENCH_RESULT_URL", "redis://127.0.0.1:6379/8")

WORKERS = {
    "fastq": [sys.executable, "-m", "fastq.cli", "worker", "-A", "bench.apps", "-P", "solo",
              "--prefetch-multiplier", "1", "-l", "warning"],
    "celery": [sys.executable, "-m", "celery", "-A", "bench.apps", "worker", "-P", "solo",
               "-c", "1", "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-l", "warning"],
    "bare": [sys.executable, "-m", "bench.bare", "echo"],
    "bare-confirm": [sys.executable, "-m", "bench.bare", "echo"],
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(flavour: str, count: int, warmup: int = 200) -> list[float]:
    env = dict(os.environ, BENCH_FLAVOUR=flavour, BENCH_RESULTS=RESULT_URL,
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    os.environ.update(BENCH_FLAVOUR=flavour, BENCH_RESULTS=RESULT_URL)
    sys.modules.pop("bench.apps", None)
    from bench.apps import QUEUE, app

    with tempfile.TemporaryDirectory(prefix="fastq-latency-") as tmp:
        log = open(os.path.join(tmp, "log"), "wb")
        proc = subprocess.Popen(WORKERS[flavour], env=env, cwd=tmp, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            if flavour.startswith("bare"):
                return _bare_round_trips(QUEUE, count, warmup,
                                         confirm=flavour == "bare-confirm")
            noop = app.tasks["bench.echo"]
            for _ in range(warmup):  # connections up, caches warm, worker ready
                noop.delay(1).get(timeout=60)
            samples = []
            for i in range(count):
                began = time.perf_counter()
                noop.delay(i).get(timeout=10)
                samples.append((time.perf_counter() - began) * 1e6)
            return samples
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
            if flavour != "celery":
                app.close()
            del QUEUE


def _bare_round_trips(queue: str, count: int, warmup: int, confirm: bool) -> list[float]:
    from bench.bare import connect

    conn = connect()
    try:
        reply_to = f"bench.reply.{os.getpid()}"
        conn.declare_queue(reply_to, durable=False, exclusive=True, auto_delete=True)
        conn.declare_queue(queue, durable=True)
        conn.consume(reply_to, no_ack=True)
        if confirm:
            conn.confirm_select()
        samples = []
        for i in range(warmup + count):
            body = str(i).encode()
            began = time.perf_counter()
            conn.publish("", queue, body, {"delivery_mode": 2, "reply_to": reply_to,
                                           "correlation_id": str(i)}, None)
            if confirm:
                conn.wait_for_confirms(10.0)
            while True:
                got = conn.drain(1, 10.0)
                if not got:
                    raise SystemExit("bench.bare echo did not answer within 10 s")
                if got[0][7] == body:
                    break
            if i >= warmup:
                samples.append((time.perf_counter() - began) * 1e6)
        return samples
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Measure each flavour in turn; its round trips in microseconds, by flavour."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", default="fastq,celery,bare")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.tasks < 1:
        parser.error("--runs and --tasks must be at least 1")
    flavours = args.only.split(",")
    unknown = [f for f in flavours if f not in WORKERS]
    if unknown:
        parser.error(f"unknown flavour(s) {', '.join(unknown)}; choose from {', '.join(WORKERS)}")
    print(f"{'':16s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'max':>8s}   (µs, {args.tasks} "
          f"round trips one at a time, RabbitMQ, results via {RESULT_URL})")
    samples: dict[str, list[float]] = {f: [] for f in flavours}
    percentiles: dict[str, list[tuple[float, ...]]] = {f: [] for f in flavours}
    for run in range(1, args.runs + 1):
        for flavour in flavours:
            measured = measure(flavour, args.tasks)
            samples[flavour] += measured
            figures = summarise(measured)
            percentiles[flavour].append(figures)
            label = f"run {run} {flavour}" if args.runs > 1 else flavour
            print(f"{label:16s} " + " ".join(f"{v:8.0f}" for v in figures), flush=True)
    if args.runs > 1:
        print_medians(percentiles, args.runs)
    return samples


def summarise(samples: list[float]) -> tuple[float, float, float, float]:
    """p50, p90, p99 and max of one run's round trips."""
    return (statistics.median(samples), percentile(samples, 0.9), percentile(samples, 0.99),
            max(samples))


def print_medians(percentiles: dict[str, list[tuple[float, ...]]], runs: int) -> None:
    """Median of each percentile over the runs; p50's range; p50 against bare's."""
    print(f"\nmedian of {runs} runs (µs)")
    print(f"{'':16s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'max':>8s} {'p50 range':>14s}"
          f" {'vs bare':>8s}")
    bare_p50 = statistics.median(p[0] for p in percentiles["bare"]) \
        if "bare" in percentiles else None
    for flavour, per_run in percentiles.items():
        medians = [statistics.median(column) for column in zip(*per_run)]
        p50s = [p[0] for p in per_run]
        over = f"{medians[0] - bare_p50:+8.0f}" if bare_p50 is not None else f"{'-':>8s}"
        print(f"{flavour:16s} " + " ".join(f"{v:8.0f}" for v in medians)
              + f" {f'{min(p50s):.0f}-{max(p50s):.0f}':>14s} {over}")


if __name__ == "__main__":
    main()
