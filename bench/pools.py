"""I/O-bound tasks on the concurrent pools: fastq gevent/asyncio/threads vs Celery gevent.

    python -m bench.pools [-n 20000] [--runs 3] [--sleep 0.01] [-c 1000] [--only ...]

Each task waits ``--sleep`` seconds (time.sleep, patched under gevent; asyncio.sleep for
the asyncio pool), as a task calling a slow HTTP service would. One worker process per
contender drains the same pre-published RabbitMQ queue; the rate is N over the time
between a start and an end stamp task (see bench/throughput.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench.throughput import run_one


def contenders(concurrency: int) -> dict[str, tuple[dict, list[str]]]:
    c = str(concurrency)
    fastq = [sys.executable, "-m", "fastq", "worker", "-A", "bench.apps", "-c", c,
             "--prefetch-multiplier", "2", "-l", "warning"]
    return {
        "fastq-gevent": ({"BENCH_FLAVOUR": "fastq"}, [*fastq, "-P", "gevent"]),
        "fastq-asyncio": ({"BENCH_FLAVOUR": "fastq"}, [*fastq, "-P", "asyncio"]),
        "fastq-eventlet": ({"BENCH_FLAVOUR": "fastq"}, [*fastq, "-P", "eventlet"]),
        "celery-gevent": ({"BENCH_FLAVOUR": "celery"},
                          [sys.executable, "-m", "celery", "-A", "bench.apps", "worker",
                           "-P", "gevent", "-c", c, "--prefetch-multiplier", "2",
                           "--without-gossip", "--without-mingle", "--without-heartbeat",
                           "-l", "warning"]),
    }


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--tasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.01)
    parser.add_argument("-c", "--concurrency", type=int, default=1000)
    parser.add_argument("--only", default="fastq-gevent,fastq-asyncio,celery-gevent")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    table = contenders(args.concurrency)
    names = [n for n in args.only.split(",") if n]
    rates: dict[str, list[float]] = {n: [] for n in names}
    for run in range(1, args.runs + 1):
        for name in names:
            task = "bench.aio" if name == "fastq-asyncio" else "bench.io"
            rate, _worker_us, _broker_us = run_one(name, args.tasks, args.timeout, table, task,
                                                   (args.sleep,))
            rates[name].append(rate)
            print(f"run {run} {name:14s} {rate:>10,.0f} tasks/s", flush=True)
    base = statistics.median(rates["celery-gevent"]) if rates.get("celery-gevent") else None
    print(f"\n{args.tasks:,} tasks sleeping {args.sleep * 1000:g} ms, -c {args.concurrency}, "
          f"one worker process, RabbitMQ on loopback, median of {args.runs} run(s)")
    print(f"{'contender':15s} {'tasks/s':>10s} {'range':>21s} {'vs celery-gevent':>17s}")
    for name in names:
        med = statistics.median(rates[name])
        ratio = f"{med / base:.1f}x" if base else "-"
        print(f"{name:15s} {med:>10,.0f} {min(rates[name]):>10,.0f}-{max(rates[name]):<10,.0f} "
              f"{ratio:>17s}")
    return rates


if __name__ == "__main__":
    main()
