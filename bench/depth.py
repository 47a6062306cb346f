"""How a worker's throughput grows or falls with the depth of its queue, per broker.

    python -m bench.depth [--brokers sqlite,redis,amqp] [--depths 10000,100000,1000000]
                          [-n 20000] [--runs 3] [--plot depth.png]

For each broker and depth D: a start stamp, N no-ops and an end stamp go into an empty
queue, then D more no-ops behind them; a solo fastq worker (prefetch 256) drains the
first N + 2 while D wait behind, and its rate is N over the time between the stamps.
The queue is purged before the next depth. A claim whose cost grows with what the queue
holds (an O(n) scan, an index rewrite) shows here as a falling rate. The publisher's
rate into each broker, for the whole fill, is printed beside it.

Each broker runs in a child process of its own, because ``bench.apps`` reads
``BENCH_BROKER_URL`` when imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.throughput import read_stamps, stop_worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BROKERS = {
    "sqlite": None,  # a file in a temporary directory, made per run
    "redis": "redis://127.0.0.1:6379/6",
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
}

WORKER = [sys.executable, "-m", "fastq.cli", "worker", "-A", "bench.apps", "-P", "solo",
          "--prefetch-multiplier", "256", "-l", "warning"]


def fill(count: int, depth: int, start_path: str, end_path: str) -> float:
    """The measured tasks between their stamps, then ``depth`` more; the publish rate."""
    from bench.apps import QUEUE, app

    app.broker.purge(QUEUE)
    began = time.perf_counter()
    app.send_many([("bench.stamp", (start_path,), None)], queue=QUEUE)
    chunk = 5000
    for first in range(0, count, chunk):
        app.send_many([("bench.noop", (), None)] * min(chunk, count - first), queue=QUEUE)
    app.send_many([("bench.stamp", (end_path,), None)], queue=QUEUE)
    for first in range(0, depth, chunk):
        app.send_many([("bench.noop", (), None)] * min(chunk, depth - first), queue=QUEUE)
    return (count + depth + 2) / (time.perf_counter() - began)


def drain(count: int, start_path: str, end_path: str, timeout: float) -> float:
    """Run a worker until the end stamp is written; the rate between the stamps."""
    env = dict(os.environ, BENCH_FLAVOUR="fastq",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    log_path = end_path + ".log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(WORKER, env=env, cwd=os.path.dirname(end_path),
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        started, ended = read_stamps(proc, "fastq", count, start_path, end_path, log_path,
                                     timeout)
    finally:
        stop_worker(proc)
    return count / (ended - started)


def one_broker(depths: list[int], count: int, runs: int, timeout: float) -> dict:
    """In the child process for one broker: ``{depth: {"drain": [...], "publish": [...]}}``."""
    from bench.apps import QUEUE, app

    figures: dict[int, dict[str, list[float]]] = {d: {"drain": [], "publish": []}
                                                   for d in depths}
    try:
        for _run in range(runs):
            for depth in depths:  # interleaved, so drift hits every depth alike
                with tempfile.TemporaryDirectory(prefix="fastq-depth-") as tmp:
                    start, end = os.path.join(tmp, "start"), os.path.join(tmp, "end")
                    figures[depth]["publish"].append(fill(count, depth, start, end))
                    figures[depth]["drain"].append(drain(count, start, end, timeout))
                    app.broker.purge(QUEUE)
    finally:
        app.broker.purge(QUEUE)
        app.close()
    return figures


def main(argv: list[str] | None = None) -> dict[str, dict[int, list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", default=",".join(BROKERS),
                        help=f"comma-separated, from: {', '.join(BROKERS)}")
    parser.add_argument("--depths", default="10000,100000,1000000")
    parser.add_argument("-n", "--tasks", type=int, default=20_000,
                        help="tasks timed at each depth")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--plot", default=None, help="draw the curves into this PNG")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",") if d]
    if args.plot:
        import matplotlib  # noqa: F401 - fail now rather than after minutes of filling
    if args.child:
        print(json.dumps(one_broker(depths, args.tasks, args.runs, args.timeout)))
        return {}
    drains: dict[str, dict[int, list[float]]] = {}
    for name in [b for b in args.brokers.split(",") if b]:
        with tempfile.TemporaryDirectory(prefix="fastq-depth-") as tmp:
            url = BROKERS[name] or f"sqlite:///{os.path.join(tmp, 'broker.sqlite3')}"
            env = dict(os.environ, BENCH_BROKER_URL=url, BENCH_QUEUE="bench-depth",
                       PYTHONPATH=os.pathsep.join(
                           filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
            env.pop("BENCH_RESULTS", None)
            out = subprocess.run(
                [sys.executable, "-m", "bench.depth", "--child", name, "--depths",
                 args.depths, "-n", str(args.tasks), "--runs", str(args.runs),
                 "--timeout", str(args.timeout)],
                env=env, stdout=subprocess.PIPE, check=True).stdout
        figures = {int(d): v for d, v in json.loads(out.decode().splitlines()[-1]).items()}
        drains[name] = {d: figures[d]["drain"] for d in depths}
        print(f"\n{name}: {args.tasks:,} no-ops timed in front of D more, median of "
              f"{args.runs} run(s)")
        print(f"{'depth':>10s} {'tasks/s':>10s} {'range':>21s} {'vs first':>9s} "
              f"{'publish/s':>10s}")
        first = statistics.median(figures[depths[0]]["drain"])
        for depth in depths:
            rates = figures[depth]["drain"]
            med = statistics.median(rates)
            print(f"{depth:>10,d} {med:>10,.0f} {min(rates):>10,.0f}-{max(rates):<10,.0f} "
                  f"{med / first:>9.0%} {statistics.median(figures[depth]['publish']):>10,.0f}",
                  flush=True)
    if args.plot:
        plot(drains, args.plot)
        print(f"curves drawn in {args.plot}")
    return drains


def draw(ax, drains: dict[str, dict[int, list[float]]]) -> None:
    """Median throughput against depth, one line per broker, min-max as a band."""
    for name, by_depth in drains.items():
        depths = sorted(by_depth)
        medians = [statistics.median(by_depth[d]) for d in depths]
        ax.plot(depths, medians, marker="o", label=name)
        ax.fill_between(depths, [min(by_depth[d]) for d in depths],
                        [max(by_depth[d]) for d in depths], alpha=0.2)
    ax.set_xscale("log")
    ax.set(title="throughput against queue depth (median, band: min-max)",
           xlabel="messages waiting behind", ylabel="tasks/s")
    ax.set_ylim(bottom=0)
    ax.legend()


def plot(drains: dict[str, dict[int, list[float]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    draw(ax, drains)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
