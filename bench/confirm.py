"""When RabbitMQ confirms a persistent message, against how long its consumer takes.

    python -m bench.confirm [-n 400] [--runs 3] [--busy 0,50,100,150,200,300,500]

The bare driver publishes persistent messages one at a time and awaits each one's
publisher confirm, then its reply, as ``bench.latency``'s ``bare-confirm`` does (with its
``BareCaller``). The answer comes from ``bench.bare echo BUSY``, which spins BUSY µs of
CPU before it replies and acks, standing for a worker's own time; a last line publishes
to a queue nobody consumes. Each run takes every consumer in turn, and the table gives the medians over the
runs of each one's p50: when the confirm came, and when the reply was in hand after it.

What this showed on the 2-core machine the README's tables come from: a round trip with
a confirm is the confirm's time, not the sum of the hops. The confirm has a floor (the
message's write to disk, 0.66-0.68 ms with no consumer) that a quick consumer does not
lower but raises (0.77-0.94 ms for 0-200 µs of work); past 200-300 µs the confirm comes
first and the reply sets the round trip.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

QUEUE = "bench.confirm"
IDLE_QUEUE = "bench.confirm.idle"


def confirm_times(caller, queue: str, count: int, answered: bool) -> tuple[float, float]:
    """p50 of the confirm's time and of the reply's (with ``answered``), in µs, over
    ``count`` messages published by ``caller`` (a ``bench.latency.BareCaller``)."""
    conn = caller.conn
    confirmed, replied = [], []
    body = b"x" * 500  # about a task message's size
    for i in range(count):
        answer = str(i)
        began = time.perf_counter()
        conn.publish("", queue, body, {"delivery_mode": 2, "reply_to": caller.reply_to,
                                       "correlation_id": answer}, None)
        conn.wait_for_confirms(10.0)
        confirmed.append((time.perf_counter() - began) * 1e6)
        if answered:
            caller.await_answer(answer)
        replied.append((time.perf_counter() - began) * 1e6)
    if not answered:
        conn.purge_queue(queue)
    return statistics.median(confirmed), statistics.median(replied)


def measure(busy: list[int], count: int, runs: int) -> dict[str, list[tuple[float, float]]]:
    """Each run: an echo per ``busy`` value in turn, then the queue with no consumer."""
    from bench.latency import BareCaller, _worker_env

    env = _worker_env("bare", QUEUE)
    results: dict[str, list[tuple[float, float]]] = {}
    with BareCaller(confirm=True) as caller:
        for queue in (QUEUE, IDLE_QUEUE):
            caller.conn.declare_queue(queue, durable=True)
        for _ in range(runs):
            for us in busy:
                echo = subprocess.Popen([sys.executable, "-m", "bench.bare", "echo", str(us)],
                                        env=env)
                try:
                    confirm_times(caller, QUEUE, 100, answered=True)  # the echo is up, warm
                    results.setdefault(str(us), []).append(
                        confirm_times(caller, QUEUE, count, answered=True))
                finally:
                    echo.kill()
                    echo.wait()
            results.setdefault("none", []).append(
                confirm_times(caller, IDLE_QUEUE, count, answered=False))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=400, help="round trips per consumer and run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--busy", default="0,50,100,150,200,300,500",
                        help="µs of CPU the echo spends before each answer, comma-separated")
    args = parser.parse_args()
    results = measure([int(us) for us in args.busy.split(",")], args.n, args.runs)
    floor = statistics.median(confirmed for confirmed, _ in results["none"])
    print(f"medians of {args.runs} runs of {args.n} persistent messages (µs)")
    print(f"{'consumer busy':>14s} {'confirm p50':>12s} {'reply p50':>10s} {'vs no consumer':>15s}")
    for name, rows in results.items():
        confirmed = statistics.median(row[0] for row in rows)
        replied = statistics.median(row[1] for row in rows)
        label = "no consumer" if name == "none" else f"{name} µs"
        reply = "-" if name == "none" else f"{replied:.0f}"
        print(f"{label:>14s} {confirmed:12.0f} {reply:>10s} {confirmed - floor:+15.0f}")


if __name__ == "__main__":
    main()
