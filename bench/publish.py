"""Publish rate to a RabbitMQ queue, with and without publisher confirms: fastq vs Celery.

    python -m bench.publish [-n 10000] [--runs 3] [--only fastq,celery,raw]
                            [--confirms both|yes|no] [--batch 1000]

Contenders, all publishing the same no-op task to the same queue ("bench.publish"):

- fastq:    ``app.send_many`` in batches of ``--batch`` on the rabbitmq-c driver;
            with confirms, one ``wait_for_confirms`` per batch (AMQPBroker's
            ``confirm_publish`` transport option);
- fastq-py: the same on the py-amqp driver (FASTQ_NO_SPEEDUPS's twin);
- celery:   Celery 5.7's ``send_task`` one message at a time, its normal API; with
            confirms, kombu's ``confirm_publish`` waits for each message's confirm;
- raw:      the ceiling: one pre-built message published N times through rabbitmq-c's
            own ``amqp_basic_publish`` (``Connection.publish`` with ``direct_writes``
            off: three writes per message), then a single ``wait_for_confirms`` when
            confirmed. fastq's driver frames publishes itself and writes a batch at
            once, so fastq can pass this "ceiling".

Every run starts on an empty queue with its connection already open (a warm-up message
declares the queue and is purged), so connecting is not counted. Without confirms the
clock stops when the last publish call returns: that is what a caller waits for, though
the broker may still be reading the socket; each run then checks that all N messages
did land before purging the queue.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("BENCH_PUBLISH_QUEUE", "bench.publish")
TASK = "bench.noop"

#: How long to wait for the published messages to show up in the queue after a run.
LAND_TIMEOUT = 30.0


def _conn_params() -> dict:
    url = urlsplit(BROKER_URL)
    return {"host": url.hostname or "127.0.0.1", "port": url.port or 5672,
            "vhost": unquote(url.path[1:]) or "/", "user": unquote(url.username or "guest"),
            "password": unquote(url.password or "guest")}


def _c_driver() -> type:
    try:
        from fastq._speedups._amqp import Connection
    except ImportError as exc:
        raise SystemExit(f"the rabbitmq-c driver is not built ({exc}); the raw contender "
                         f"and the queue bookkeeping need it") from None
    return Connection


class Admin:
    """A side connection that declares, counts and purges the bench queue."""

    def __init__(self) -> None:
        self.conn = _c_driver()(**_conn_params())
        self.conn.connect()
        # Celery's topology, so fastq and Celery both find the queue as they would declare it
        self.conn.declare_queue(QUEUE, durable=True, auto_delete=False)
        self.conn.declare_exchange(QUEUE, "direct", durable=True, auto_delete=False)
        self.conn.bind_queue(QUEUE, QUEUE, QUEUE)

    def purge(self) -> None:
        self.conn.purge_queue(QUEUE)

    def wait_for(self, count: int) -> int:
        """The queue's depth once it holds ``count`` messages (or LAND_TIMEOUT passed)."""
        deadline = time.monotonic() + LAND_TIMEOUT
        while True:
            depth = self.conn.declare_queue(QUEUE, passive=True)[1]
            if depth >= count or time.monotonic() > deadline:
                return depth
            time.sleep(0.02)

    def close(self) -> None:
        self.conn.close()


# -- contenders: each returns (warm_up, publish_n, close) ---------------------------------

Contender = tuple[Callable[[], None], Callable[[int], None], Callable[[], None]]


def _fastq(confirm: bool, batch: int, driver: str) -> Contender:
    from fastq import App

    app = App("bench-publish", broker=BROKER_URL, task_default_queue=QUEUE,
              task_ignore_result=True,
              broker_transport_options={"confirm_publish": confirm, "driver": driver})
    call = (TASK, (), None)

    def warm_up() -> None:
        app.send_many([call], queue=QUEUE)

    def publish(count: int) -> None:
        send_many = app.send_many
        for first in range(0, count, batch):
            send_many([call] * min(batch, count - first), queue=QUEUE)

    return warm_up, publish, app.close


def _celery(confirm: bool, batch: int) -> Contender:
    from celery import Celery

    app = Celery("bench-publish", broker=BROKER_URL)
    app.conf.update(task_default_queue=QUEUE, task_ignore_result=True,
                    task_serializer="json", broker_connection_retry_on_startup=True,
                    broker_transport_options={"confirm_publish": confirm})

    def warm_up() -> None:
        app.send_task(TASK, queue=QUEUE)

    def publish(count: int) -> None:
        send_task = app.send_task
        for _ in range(count):
            send_task(TASK, queue=QUEUE)

    return warm_up, publish, app.close


def _raw(confirm: bool, batch: int) -> Contender:
    from fastq import protocol

    conn = _c_driver()(**_conn_params())
    conn.direct_writes = False  # rabbitmq-c's amqp_basic_publish, as a C program would
    conn.connect()
    if confirm:
        conn.confirm_select()
    # the bytes fastq would send for the same call, built once: only the wire cost remains
    m = protocol.build_task_message(TASK, protocol.new_task_id(), (), {}, queue=QUEUE)
    body, props, headers = m.body, m.properties, m.headers

    def warm_up() -> None:
        conn.publish("", QUEUE, body, props, headers)
        if confirm:
            conn.wait_for_confirms(30.0)

    def publish(count: int) -> None:
        pub = conn.publish
        for _ in range(count):
            pub("", QUEUE, body, props, headers)
        if confirm:
            conn.wait_for_confirms(60.0)

    return warm_up, publish, conn.close


CONTENDERS: dict[str, Callable[[bool, int], Contender]] = {
    "fastq": lambda confirm, batch: _fastq(confirm, batch, "rabbitmq-c"),
    "fastq-py": lambda confirm, batch: _fastq(confirm, batch, "py-amqp"),
    "celery": _celery,
    "raw": _raw,
}


def label(name: str, confirm: bool) -> str:
    """The key a result is filed under in what ``main`` returns."""
    return f"{name}/{'confirms' if confirm else 'no-confirms'}"


def run_one(admin: Admin, name: str, confirm: bool, count: int,
            batch: int) -> tuple[float, float]:
    """Publish ``count`` messages with one contender; messages per second, and the
    publishing process's CPU time (user + system) per message in microseconds.

    The rate is bounded by whichever side is slower: once RabbitMQ applies flow control
    to a publisher it swings with the broker's own work. The CPU time is what the client
    spent, the broker aside: the steadier figure for comparing two publishers.
    """
    warm_up, publish, close = CONTENDERS[name](confirm, batch)
    try:
        warm_up()
        admin.wait_for(1)
        admin.purge()
        cpu_began = time.process_time()
        began = time.perf_counter()
        publish(count)
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        landed = admin.wait_for(count)
        if landed != count:
            # a rate for messages that never arrived would flatter the contender
            raise SystemExit(f"{label(name, confirm)}: {landed} of {count} messages reached "
                             f"{QUEUE!r}")
    finally:
        close()
        admin.purge()
    return count / elapsed, cpu / count * 1e6


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Rates by contender (see ``label``); the CPU figures are printed only."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument("--confirms", choices=("both", "yes", "no"), default="both")
    parser.add_argument("--batch", type=int, default=1000,
                        help="messages per fastq send_many call")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)} "
                     f"(known: {', '.join(CONTENDERS)})")
    modes = {"both": (True, False), "yes": (True,), "no": (False,)}[args.confirms]
    cases = [(name, confirm) for confirm in modes for name in names]
    rates: dict[str, list[float]] = {label(n, c): [] for n, c in cases}
    cpus: dict[str, list[float]] = {label(n, c): [] for n, c in cases}
    admin = Admin()
    try:
        admin.purge()
        for run in range(1, args.runs + 1):
            for name, confirm in cases:  # interleaved, so drift hits every contender alike
                rate, cpu = run_one(admin, name, confirm, args.tasks, args.batch)
                rates[label(name, confirm)].append(rate)
                cpus[label(name, confirm)].append(cpu)
                print(f"run {run} {name:9s} confirms {'yes' if confirm else 'no ':3s} "
                      f"{rate:>10,.0f} msgs/s {cpu:>7.2f} CPU µs/msg", flush=True)
    finally:
        admin.purge()
        admin.close()

    print(f"\n{args.tasks:,} messages to {QUEUE!r}, RabbitMQ on loopback, median of "
          f"{args.runs} run(s); ratios compare like with like (same confirms setting)")
    print(f"{'contender':10s} {'confirms':>8s} {'msgs/s':>10s} {'range':>21s} "
          f"{'vs celery':>10s} {'vs raw':>8s} {'CPU µs/msg':>11s} {'raw/this':>9s}")
    for name, confirm in cases:
        med = statistics.median(rates[label(name, confirm)])
        low, high = min(rates[label(name, confirm)]), max(rates[label(name, confirm)])
        ratios = []
        for other in ("celery", "raw"):
            ref = rates.get(label(other, confirm))
            ratios.append(f"{med / statistics.median(ref):.2f}x" if ref else "-")
        cpu = statistics.median(cpus[label(name, confirm)])
        raw_cpu = cpus.get(label("raw", confirm))
        # the raw loop's CPU per message over this one's: the rate ratio a publisher
        # bound by its own CPU would reach
        cpu_ratio = f"{statistics.median(raw_cpu) / cpu:.2f}x" if raw_cpu else "-"
        print(f"{name:10s} {'yes' if confirm else 'no':>8s} {med:>10,.0f} "
              f"{low:>10,.0f}-{high:<10,.0f} {ratios[0]:>10s} {ratios[1]:>8s} "
              f"{cpu:>11.2f} {cpu_ratio:>9s}")
    return rates


if __name__ == "__main__":
    main()
