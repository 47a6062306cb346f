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

Two more split fastq's gap over ``bare-confirm`` between its two sides. In both, the bare
caller sends what ``delay()`` sends: a Celery message with its 19 headers, made by
fastq's protocol before the clock starts (its CPU time is counted all the same). It
awaits the confirm and the reply with the driver alone. ``bare-celery`` answers it with
``bench.bare echo`` (what the bigger message costs RabbitMQ); ``fastq-worker`` with
fastq's worker (what the worker adds). What ``fastq`` adds beyond ``fastq-worker`` is the
caller's: ``delay()`` and ``get()``.

Each line also gives the CPU time per round trip of the three processes on its path,
read from ``/proc``: the caller (this process), the worker (with its children) and
RabbitMQ's Erlang VM (``beam.smp``, when it runs on this machine). RabbitMQ confirms a
persistent message once a consumer has acked it, so the caller's ``delay()`` returns
only after the worker's ack; the CPU each side spends on the way is what the round trip
is made of, on a machine whose cores the three share.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.depth import tree_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_URL = os.environ.get("BENCH_RESULT_URL", "redis://127.0.0.1:6379/8")

FASTQ_WORKER = [sys.executable, "-m", "fastq.cli", "worker", "-A", "bench.apps", "-P", "solo",
                "--prefetch-multiplier", "1", "-l", "warning"]
WORKERS = {
    "fastq": FASTQ_WORKER,
    "fastq-worker": FASTQ_WORKER,
    "celery": [sys.executable, "-m", "celery", "-A", "bench.apps", "worker", "-P", "solo",
               "-c", "1", "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-l", "warning"],
    "bare": [sys.executable, "-m", "bench.bare", "echo"],
    "bare-confirm": [sys.executable, "-m", "bench.bare", "echo"],
    "bare-celery": [sys.executable, "-m", "bench.bare", "echo"],
}

#: flavours whose caller is the bare driver loop, and whether it sends Celery's message
_BARE_CALLERS = {"bare": False, "bare-confirm": False, "bare-celery": True,
                 "fastq-worker": True}


#: CPU µs per round trip (caller, worker, broker) of each run, by flavour; filled by measure
CPU: dict[str, list[tuple[float, float, float]]] = {}


def _broker_pid() -> int | None:
    """RabbitMQ's Erlang VM here, or None (a broker on another machine)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == "beam.smp":
                        return int(entry)
            except OSError:
                continue
    return None


def _cpu_reader(worker_pid: int):
    """A function giving the CPU seconds so far of (caller, worker tree, broker)."""
    broker_pid = _broker_pid()

    def read() -> tuple[float, float, float]:
        return (time.process_time(), tree_cpu(worker_pid),
                tree_cpu(broker_pid) if broker_pid else 0.0)
    return read


def _note_cpu(flavour: str, before: tuple, after: tuple, count: int) -> None:
    CPU.setdefault(flavour, []).append(
        tuple((b - a) / count * 1e6 for a, b in zip(before, after)))


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
            cpu = _cpu_reader(proc.pid)
            if flavour in _BARE_CALLERS:
                samples, before, after = _bare_round_trips(
                    QUEUE, count, warmup, confirm=flavour != "bare", cpu=cpu,
                    celery_message=_BARE_CALLERS[flavour])
                _note_cpu(flavour, before, after, count)
                return samples
            noop = app.tasks["bench.echo"]
            for _ in range(warmup):  # connections up, caches warm, worker ready
                noop.delay(1).get(timeout=60)
            samples = []
            before = cpu()
            for i in range(count):
                began = time.perf_counter()
                noop.delay(i).get(timeout=10)
                samples.append((time.perf_counter() - began) * 1e6)
            _note_cpu(flavour, before, cpu(), count)
            return samples
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
            if flavour != "celery":
                app.close()
            del QUEUE


def _bare_round_trips(queue: str, count: int, warmup: int, confirm: bool,
                      cpu, celery_message: bool = False) -> tuple[list[float], tuple, tuple]:
    """The round trips, and ``cpu()`` read before and after the timed ones; with
    ``celery_message``, each sends what ``bench.echo.delay(i)`` would."""
    from bench.bare import connect
    from fastq.protocol import build_task_message, new_task_id

    conn = connect()
    try:
        reply_to = f"bench.reply.{os.getpid()}"
        conn.declare_queue(reply_to, durable=False, exclusive=True, auto_delete=True)
        conn.declare_queue(queue, durable=True)
        conn.consume(reply_to, no_ack=True)
        if confirm:
            conn.confirm_select()
        samples = []
        before = cpu()
        for i in range(warmup + count):
            if i == warmup:
                before = cpu()
            if celery_message:
                message = build_task_message("bench.echo", new_task_id(), (i,), {},
                                             reply_to=reply_to)
                body, properties, headers = message.body, message.properties, message.headers
            else:
                body, headers = str(i).encode(), None
                properties = {"delivery_mode": 2, "reply_to": reply_to,
                              "correlation_id": str(i)}
            answer = properties["correlation_id"]
            began = time.perf_counter()
            conn.publish("", queue, body, properties, headers)
            if confirm:
                conn.wait_for_confirms(10.0)
            while True:
                got = conn.drain(1, 10.0)
                if not got:
                    raise SystemExit("the worker did not answer within 10 s")
                if got[0][5].get("correlation_id") == answer:
                    break
            if i >= warmup:
                samples.append((time.perf_counter() - began) * 1e6)
        return samples, before, cpu()
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
          f"round trips one at a time, RabbitMQ, results via {RESULT_URL}; then CPU µs per "
          f"round trip: caller/worker/broker)")
    samples: dict[str, list[float]] = {f: [] for f in flavours}
    percentiles: dict[str, list[tuple[float, ...]]] = {f: [] for f in flavours}
    for run in range(1, args.runs + 1):
        for flavour in flavours:
            measured = measure(flavour, args.tasks)
            samples[flavour] += measured
            figures = summarise(measured)
            percentiles[flavour].append(figures)
            label = f"run {run} {flavour}" if args.runs > 1 else flavour
            spent = "/".join(f"{v:.0f}" for v in CPU[flavour][-1])
            print(f"{label:16s} " + " ".join(f"{v:8.0f}" for v in figures) + f"   {spent}",
                  flush=True)
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
          f" {'vs bare':>8s}   CPU µs/round trip caller/worker/broker")
    bare_p50 = statistics.median(p[0] for p in percentiles["bare"]) \
        if "bare" in percentiles else None
    for flavour, per_run in percentiles.items():
        medians = [statistics.median(column) for column in zip(*per_run)]
        p50s = [p[0] for p in per_run]
        over = f"{medians[0] - bare_p50:+8.0f}" if bare_p50 is not None else f"{'-':>8s}"
        spent = "/".join(f"{statistics.median(c):.0f}" for c in zip(*CPU.get(flavour, [])))
        print(f"{flavour:16s} " + " ".join(f"{v:8.0f}" for v in medians)
              + f" {f'{min(p50s):.0f}-{max(p50s):.0f}':>14s} {over}   {spent}")


if __name__ == "__main__":
    main()
