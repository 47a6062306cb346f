"""Round trip of one task at a time, ``delay(...).get()``: fastq vs Celery, in microseconds.

    python -m bench.latency [-n 2000] [--runs 1] [--only fastq,celery,bare] [--interleave BLOCK]

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
RabbitMQ's Erlang VM (``beam.smp``, when it runs on this machine). With a confirm, a round
trip lasts as long as the confirm takes (``bench.confirm``): RabbitMQ confirms a
persistent message once it is on disk, and later when a consumer acks it meanwhile, so a
worker's own time shows only past a point; the caller's, before its publish and after
the confirm, shows in full.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.cpu import broker_pid, tree_cpu

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


def _cpu_reader(worker_pid: int):
    """A function giving the CPU seconds so far of (caller, worker tree, broker)."""
    broker = broker_pid()

    def read() -> tuple[float, float, float]:
        return (time.process_time(), tree_cpu(worker_pid),
                tree_cpu(broker) if broker else 0.0)
    return read


def _note_cpu(flavour: str, before: tuple, after: tuple, count: int) -> None:
    CPU.setdefault(flavour, []).append(
        tuple((b - a) / count * 1e6 for a, b in zip(before, after)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _worker_env(flavour: str, queue: str | None = None) -> dict[str, str]:
    env = dict(os.environ, BENCH_FLAVOUR=flavour, BENCH_RESULTS=RESULT_URL,
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    if queue is not None:
        env["BENCH_QUEUE"] = queue
    return env


def _load_app(flavour: str):
    """bench.apps made afresh for ``flavour``'s caller: ``(its queue, the app)``."""
    os.environ.update(BENCH_FLAVOUR=flavour, BENCH_RESULTS=RESULT_URL)
    sys.modules.pop("bench.apps", None)
    from bench.apps import QUEUE, app

    return QUEUE, app


def _timed_delays(app, count: int) -> list[float]:
    echo = app.tasks["bench.echo"]
    samples = []
    for i in range(count):
        began = time.perf_counter()
        echo.delay(i).get(timeout=10)
        samples.append((time.perf_counter() - began) * 1e6)
    return samples


def measure(flavour: str, count: int, warmup: int = 200) -> list[float]:
    queue, app = _load_app(flavour)
    with tempfile.TemporaryDirectory(prefix="fastq-latency-") as tmp:
        log = open(os.path.join(tmp, "log"), "wb")
        proc = subprocess.Popen(WORKERS[flavour], env=_worker_env(flavour), cwd=tmp,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            cpu = _cpu_reader(proc.pid)
            if flavour in _BARE_CALLERS:
                with BareCaller(confirm=flavour != "bare") as caller:
                    celery_message = _BARE_CALLERS[flavour]
                    caller.round_trips(queue, warmup, celery_message)
                    before = cpu()
                    samples = caller.round_trips(queue, count, celery_message)
            else:
                # connections up, caches warm, worker ready
                _timed_delays(app, warmup)
                before = cpu()
                samples = _timed_delays(app, count)
            _note_cpu(flavour, before, cpu(), count)
            return samples
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
            if flavour != "celery":
                app.close()


class BareCaller:
    """The broker's floor on the caller's side: the fastest driver publishes, awaits its
    confirm (``confirm``), and reads the answer from an exclusive reply queue."""

    def __init__(self, confirm: bool) -> None:
        self.confirm = confirm

    def __enter__(self) -> BareCaller:
        from bench.bare import connect

        self.conn = connect()
        self.reply_to = f"bench.reply.{os.getpid()}.{int(self.confirm)}"
        self.conn.declare_queue(self.reply_to, durable=False, exclusive=True,
                                auto_delete=True)
        self.conn.consume(self.reply_to, no_ack=True)
        if self.confirm:
            self.conn.confirm_select()
        return self

    def __exit__(self, *exc_info) -> None:
        self.conn.close()

    def round_trips(self, queue: str, count: int, celery_message: bool) -> list[float]:
        """``count`` round trips through ``queue``, in µs; with ``celery_message``, each
        sends what ``bench.echo.delay(i)`` would (made before the clock starts)."""
        from fastq.protocol import build_task_message, new_task_id

        conn, reply_to = self.conn, self.reply_to
        conn.declare_queue(queue, durable=True)
        samples = []
        for i in range(count):
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
            if self.confirm:
                conn.wait_for_confirms(10.0)
            self.await_answer(answer)
            samples.append((time.perf_counter() - began) * 1e6)
        return samples

    def await_answer(self, correlation_id: str) -> None:
        """Read the reply queue up to the answer with ``correlation_id``."""
        while True:
            got = self.conn.drain(1, 10.0)
            if not got:
                raise SystemExit("the worker did not answer within 10 s")
            if got[0][5].get("correlation_id") == correlation_id:
                return


def interleaved(flavours: list[str], rounds: int, block: int, warmup: int = 200,
                ) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, ...]]]]:
    """Every flavour's worker up at once, and each round a block of ``block`` round trips
    of each flavour in turn, so that what the machine does meanwhile touches them alike:
    the round trips and the percentiles of every block, by flavour (CPU gets an entry
    per block)."""
    if "celery" in flavours:
        raise SystemExit("--interleave runs fastq and the bare floors side by side; "
                         "measure celery without it")
    queue, app = _load_app("fastq")
    bare_queue = f"{queue}.bare"
    samples: dict[str, list[float]] = {f: [] for f in flavours}
    percentiles: dict[str, list[tuple[float, ...]]] = {f: [] for f in flavours}
    with tempfile.TemporaryDirectory(prefix="fastq-latency-") as tmp, \
            BareCaller(confirm=False) as plain, BareCaller(confirm=True) as confirming:
        procs: dict[str, subprocess.Popen] = {}
        logs = []
        try:
            for kind, wanted, env in (
                    ("fastq", {"fastq", "fastq-worker"}, _worker_env("fastq")),
                    ("bare", {"bare", "bare-confirm", "bare-celery"},
                     _worker_env("bare", bare_queue))):
                if wanted & set(flavours):
                    logs.append(open(os.path.join(tmp, f"{kind}.log"), "wb"))
                    procs[kind] = subprocess.Popen(
                        FASTQ_WORKER if kind == "fastq" else WORKERS["bare"], env=env,
                        cwd=tmp, stdout=logs[-1], stderr=subprocess.STDOUT)

            def run(flavour: str, count: int) -> list[float]:
                if flavour == "fastq":
                    return _timed_delays(app, count)
                caller = plain if flavour == "bare" else confirming
                return caller.round_trips(queue if flavour == "fastq-worker" else bare_queue,
                                          count, _BARE_CALLERS[flavour])

            readers = {f: _cpu_reader(procs["fastq" if f.startswith("fastq") else "bare"].pid)
                       for f in flavours}
            for flavour in flavours:
                run(flavour, warmup)
            for _ in range(rounds):
                for flavour in flavours:
                    before = readers[flavour]()
                    measured = run(flavour, block)
                    _note_cpu(flavour, before, readers[flavour](), block)
                    samples[flavour] += measured
                    percentiles[flavour].append(summarise(measured))
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(30)
            for log in logs:
                log.close()
            app.close()
    return samples, percentiles


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Measure each flavour in turn; its round trips in microseconds, by flavour."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", default="fastq,celery,bare")
    parser.add_argument("--interleave", type=int, default=0, metavar="BLOCK",
                        help="all workers up at once; each of --runs rounds gives every "
                             "flavour BLOCK round trips in turn (-n is then ignored)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.tasks < 1 or args.interleave < 0:
        parser.error("--runs and --tasks must be at least 1, --interleave at least 0")
    flavours = args.only.split(",")
    unknown = [f for f in flavours if f not in WORKERS]
    if unknown:
        parser.error(f"unknown flavour(s) {', '.join(unknown)}; choose from {', '.join(WORKERS)}")
    print(f"{'':16s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'max':>8s}   (µs, {args.tasks} "
          f"round trips one at a time, RabbitMQ, results via {RESULT_URL}; then CPU µs per "
          f"round trip: caller/worker/broker)")
    if args.interleave:
        samples, percentiles = interleaved(flavours, args.runs, args.interleave)
        print_medians(percentiles, args.runs, f"{args.runs} rounds of {args.interleave} "
                                              f"round trips per flavour, interleaved")
        return samples
    samples = {f: [] for f in flavours}
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


def print_medians(percentiles: dict[str, list[tuple[float, ...]]], runs: int,
                  what: str | None = None) -> None:
    """Median of each percentile over the runs; p50's range; p50 against bare's, and as a
    multiple of bare-confirm's (issue 18's round-trip target is 1.25)."""
    print(f"\nmedian of {what or f'{runs} runs'} (µs)")
    print(f"{'':16s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'max':>8s} {'p50 range':>14s}"
          f" {'vs bare':>8s} {'x confirm':>9s}   CPU µs/round trip caller/worker/broker")
    floors = {name: statistics.median(p[0] for p in percentiles[name])
              for name in ("bare", "bare-confirm") if name in percentiles}
    for flavour, per_run in percentiles.items():
        medians = [statistics.median(column) for column in zip(*per_run)]
        p50s = [p[0] for p in per_run]
        over = f"{medians[0] - floors['bare']:+8.0f}" if "bare" in floors else f"{'-':>8s}"
        times = f"{medians[0] / floors['bare-confirm']:9.2f}" if "bare-confirm" in floors \
            else f"{'-':>9s}"
        spent = "/".join(f"{statistics.median(c):.0f}" for c in zip(*CPU.get(flavour, [])))
        print(f"{flavour:16s} " + " ".join(f"{v:8.0f}" for v in medians)
              + f" {f'{min(p50s):.0f}-{max(p50s):.0f}':>14s} {over} {times}   {spent}")


if __name__ == "__main__":
    main()
