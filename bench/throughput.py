"""Throughput of one worker process draining pre-published no-op tasks: fastq vs Celery.

    python -m bench.throughput [-n 200000] [--runs 3] [--only fastq,celery,...]

Contenders, all on the same RabbitMQ queue in the same run: fastq with the rabbitmq-c
speedups, fastq's pure-Python twin (FASTQ_NO_SPEEDUPS=1), Celery 5.7 at its fastest
(solo, early acks, no results, prefetch 1000, no gossip/mingle/heartbeat), and a bare
consumer that acks and does nothing (the broker's ceiling here). Each run publishes a
start stamp task, N no-ops and an end stamp task; the rate is N over the time between the
two stamps, so worker start-up is not counted.

Not run by default, selected with ``--only fastq-prefork,celery-prefork``: fastq
``-P prefork -c 2`` and Celery ``-P prefork -c 2`` (same fastest settings), each ratio
against the other. With two processes the end stamp may run while the other child still
holds part of its prefetch window (fastq: 256 no-ops, Celery: the parent's 2,000), so
those rates are high by at most window/rate seconds over the run.

The cost of task events: ``--only fastq,fastq-events,celery,celery-events`` runs each
worker again with ``-E`` (every task sends task-received/-started/-succeeded); the
``vs base`` column gives each ``-events`` contender against the same worker without.

Default settings: ``--only fastq,fastq-default`` runs the worker without
``--prefetch-multiplier`` (its adaptive window); ``vs base`` gives it against the tuned
``fastq`` (a fixed window of 256).

Where each microsecond goes: the ``worker µs`` and ``broker µs`` columns are the CPU time
per task of the worker's process tree and of the local RabbitMQ (``beam.smp``), sampled
from ``/proc`` as each stamp appears (``bench.cpu``). Their sum times the rate is the CPU
the two shared: about 1.3 cores in every run on the 2-core VM here, whichever consumer
ran, so there the rate is that budget over the sum, and each µs a worker spends per task
is one the broker does not get.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from bench.cpu import broker_pid, tree_cpu
from fastq.brokers import mask_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONTENDERS = {
    "fastq": ({"BENCH_FLAVOUR": "fastq", "FASTQ_REQUIRE_SPEEDUPS": "1"},
              [sys.executable, "-m", "fastq.cli", "worker", "-A", "bench.apps", "-P", "solo",
               "--prefetch-multiplier", "256", "-l", "warning"]),
    "fastq-py": ({"BENCH_FLAVOUR": "fastq", "FASTQ_NO_SPEEDUPS": "1"},
                 [sys.executable, "-m", "fastq.cli", "worker", "-A", "bench.apps", "-P",
                  "solo", "--prefetch-multiplier", "256", "-l", "warning"]),
    "celery": ({"BENCH_FLAVOUR": "celery"},
               [sys.executable, "-m", "celery", "-A", "bench.apps", "worker", "-P", "solo",
                "-c", "1", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-l", "warning"]),
    "bare": ({"BENCH_FLAVOUR": "fastq"}, [sys.executable, "-m", "bench.bare"]),
    # default settings (the adaptive prefetch window): --only fastq,fastq-default
    "fastq-default": ({"BENCH_FLAVOUR": "fastq", "FASTQ_REQUIRE_SPEEDUPS": "1"},
                      [sys.executable, "-m", "fastq.cli", "worker", "-A", "bench.apps", "-P",
                       "solo", "-l", "warning"]),
    # task events on (-E): --only fastq,fastq-events,celery,celery-events
    "fastq-events": ({"BENCH_FLAVOUR": "fastq", "FASTQ_REQUIRE_SPEEDUPS": "1"},
                     [sys.executable, "-m", "fastq.cli", "worker", "-A", "bench.apps", "-P",
                      "solo", "--prefetch-multiplier", "256", "-E", "-l", "warning"]),
    "celery-events": ({"BENCH_FLAVOUR": "celery"},
                      [sys.executable, "-m", "celery", "-A", "bench.apps", "worker", "-P",
                       "solo", "-c", "1", "--without-gossip", "--without-mingle",
                       "--without-heartbeat", "-E", "-l", "warning"]),
    # two processes each: run with --only fastq-prefork,celery-prefork (not by default)
    "fastq-prefork": ({"BENCH_FLAVOUR": "fastq", "FASTQ_REQUIRE_SPEEDUPS": "1"},
                      [sys.executable, "-m", "fastq.cli", "worker", "-A", "bench.apps", "-P",
                       "prefork", "-c", "2", "--prefetch-multiplier", "256", "-l", "warning"]),
    "celery-prefork": ({"BENCH_FLAVOUR": "celery"},
                       [sys.executable, "-m", "celery", "-A", "bench.apps", "worker", "-P",
                        "prefork", "-c", "2", "--without-gossip", "--without-mingle",
                        "--without-heartbeat", "-l", "warning"]),
}

#: What runs without --only: the single-process contenders.
DEFAULT_CONTENDERS = ("fastq", "fastq-py", "celery", "bare")


def publish(count: int, start_path: str, end_path: str, task: str = "bench.noop",
            args: tuple = ()) -> float:
    """Fill the bench queue: a start stamp, ``count`` tasks, an end stamp; publish rate.

    A task other than the no-op is its own end stamp: the last one gets the end path as
    an extra argument and stamps when it finishes, so concurrent pools are timed to the
    end of the work, not to when the last message was taken."""
    os.environ.setdefault("BENCH_FLAVOUR", "fastq")
    from bench.apps import BROKER_URL, QUEUE, app

    if BROKER_URL.startswith(("amqp", "pyamqp")):
        refuse_if_consumed(QUEUE)
    app.broker.purge(QUEUE)
    began = time.perf_counter()
    app.send_many([("bench.stamp", (start_path,), None)], queue=QUEUE)
    chunk = 5000
    own_end = task != "bench.noop"
    plain = count - 1 if own_end else count
    for first in range(0, plain, chunk):
        n = min(chunk, plain - first)
        app.send_many([(task, args, None)] * n, queue=QUEUE)
    if own_end:
        app.send_many([(task, (*args, end_path), None)], queue=QUEUE)
    else:
        app.send_many([("bench.stamp", (end_path,), None)], queue=QUEUE)
    return count / (time.perf_counter() - began)


#: How often the stamp files are looked for; the CPU samples are off by up to this.
POLL = 0.01


def refuse_if_consumed(queue: str) -> None:
    """Stop if anything consumes ``queue`` already (a worker left from an earlier run,
    say): it would take some of the tasks, and the rate measured would be nobody's."""
    from bench.bare import connect
    from fastq.exceptions import AMQPError

    conn = connect()
    try:
        _name, _messages, consumers = conn.declare_queue(queue, passive=True)
    except AMQPError:
        return  # no such queue yet: nobody consumes it
    finally:
        conn.close()
    if consumers:
        raise SystemExit(f"{consumers} consumer(s) on queue {queue!r} already: a worker left "
                         f"from an earlier run? Stop it (rabbitmqctl list_consumers) first")


def run_one(name: str, count: int, timeout: float, contenders: dict | None = None,
            task: str = "bench.noop", args: tuple = ()) -> tuple[float, float, float | None]:
    """One drain by ``name``: tasks/s, and CPU µs per task of its process tree and of the
    local RabbitMQ (None when the broker is not a RabbitMQ on this machine)."""
    from bench.apps import BROKER_URL

    broker = broker_pid() if BROKER_URL.startswith(("amqp", "pyamqp")) else None
    env_extra, command = (contenders or CONTENDERS)[name]
    with tempfile.TemporaryDirectory(prefix="fastq-bench-") as tmp:
        start_path, end_path = os.path.join(tmp, "start"), os.path.join(tmp, "end")
        publish(count, start_path, end_path, task, args)
        env = dict(os.environ, **env_extra,
                   BENCH_COUNT=str(count + (2 if task == "bench.noop" else 1)),
                   BENCH_START=start_path, BENCH_END=end_path,
                   PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        if name == "fastq-py":
            env.pop("FASTQ_REQUIRE_SPEEDUPS", None)
        log_path = os.path.join(tmp, "log")
        proc = subprocess.Popen(command, env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=open(log_path, "wb"))
        try:
            started, ended, worker_cpu, broker_cpu = read_stamps_and_cpu(
                proc, name, count, start_path, end_path, log_path, timeout, broker)
        finally:
            stop_worker(proc)
    return (count / (ended - started), worker_cpu / count * 1e6,
            broker_cpu / count * 1e6 if broker else None)


def read_stamps_and_cpu(proc: subprocess.Popen, name: str, count: int, start_path: str,
                        end_path: str, log_path: str, timeout: float,
                        broker: int | None = None) -> tuple[float, float, float, float]:
    """``read_stamps`` polled every POLL, sampling CPU time as each stamp appears: (start,
    end, CPU seconds between them of ``proc``'s tree, and of process ``broker`` if given)."""
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        samples.append((tree_cpu(proc.pid), tree_cpu(broker) if broker else 0.0))
    started, ended = read_stamps(proc, name, count, start_path, end_path, log_path, timeout,
                                 poll=POLL, on_stamp=sample)
    (worker_before, broker_before), (worker_after, broker_after) = samples
    return started, ended, worker_after - worker_before, broker_after - broker_before


def read_stamps(proc: subprocess.Popen, name: str, count: int, start_path: str,
                end_path: str, log_path: str, timeout: float, poll: float = 0.05,
                on_stamp: Callable[[], None] | None = None) -> tuple[float, float]:
    """Wait for the worker ``proc`` to write the start stamp, then the end stamp; (start,
    end) unix times. ``on_stamp`` runs as each appears (seen within ``poll`` seconds)."""
    deadline = time.monotonic() + timeout
    for path in (start_path, end_path):
        while not os.path.exists(path):
            if proc.poll() is not None:
                with open(log_path, encoding="utf-8", errors="replace") as fh:
                    raise SystemExit(f"{name} worker exited {proc.returncode}:\n{fh.read()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not drain {count} tasks in {timeout}s")
            time.sleep(poll)
        if on_stamp is not None:
            on_stamp()
    time.sleep(0.05)  # let the stamp finish writing
    with open(start_path) as fh:
        started = float(fh.read())
    with open(end_path) as fh:
        ended = float(fh.read())
    return started, ended


def stop_worker(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if the worker is still there after 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--tasks", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(DEFAULT_CONTENDERS),
                        help=f"comma-separated, from: {', '.join(CONTENDERS)}")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    rates: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[tuple[float, float | None]]] = {n: [] for n in names}
    for run in range(1, args.runs + 1):
        for name in names:  # interleaved, so drift on a noisy machine hits all alike
            rate, worker_us, broker_us = run_one(name, args.tasks, args.timeout)
            rates[name].append(rate)
            cpu[name].append((worker_us, broker_us))
            spent = f"   CPU/task: worker {worker_us:5.1f} µs" + (
                f", broker {broker_us:5.1f} µs" if broker_us is not None else "")
            print(f"run {run} {name:14s} {rate:>10,.0f} tasks/s{spent}", flush=True)
    celery = statistics.median(rates["celery"]) if rates.get("celery") else None
    celery_prefork = (statistics.median(rates["celery-prefork"])
                      if rates.get("celery-prefork") else None)
    from bench.apps import BROKER_URL

    print(f"\n{args.tasks:,} no-op tasks, one worker (prefork: two children), broker "
          f"{mask_url(BROKER_URL)}, median of {args.runs} run(s)")
    print(f"{'contender':14s} {'tasks/s':>10s} {'tasks/min':>12s} {'range':>21s} "
          f"{'vs celery':>10s} {'vs bare':>8s} {'vs base':>8s} {'worker µs':>10s} "
          f"{'broker µs':>10s}")
    for name in names:
        med = statistics.median(rates[name])
        # prefork contenders against Celery prefork, the others against Celery solo
        # (and events-on contenders against Celery with events on, when it ran)
        base = celery_prefork if name.endswith("-prefork") else celery
        if name.endswith("-events") and rates.get("celery-events"):
            base = statistics.median(rates["celery-events"])
        ratio = f"{med / base:.1f}x" if base else "-"
        # each run against the bare consumer of the same run, which met the same broker
        # moods, then the median of those: steadier than a ratio of medians
        of_bare = (f"{statistics.median(r / b for r, b in zip(rates[name], rates['bare'])):.0%}"
                   if rates.get("bare") else "-")
        # events on against the same worker with events off, default settings against
        # the tuned worker: run by run
        variant = name.endswith(("-events", "-default"))
        off = name.rsplit("-", 1)[0] if variant else name
        of_off = (f"{statistics.median(r / o for r, o in zip(rates[name], rates[off])):.0%}"
                  if variant and rates.get(off) else "-")
        worker_us = statistics.median(w for w, _ in cpu[name])
        broker_runs = [b for _, b in cpu[name] if b is not None]
        broker_us = f"{statistics.median(broker_runs):.1f}" if broker_runs else "-"
        print(f"{name:14s} {med:>10,.0f} {med * 60:>12,.0f} "
              f"{min(rates[name]):>10,.0f}-{max(rates[name]):<10,.0f} {ratio:>10s} "
              f"{of_bare:>8s} {of_off:>8s} {worker_us:>10.1f} {broker_us:>10s}")
    return rates


if __name__ == "__main__":
    main()
