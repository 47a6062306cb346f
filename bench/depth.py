"""How a worker's throughput grows or falls with the depth of its queue, per broker.

    python -m bench.depth [--brokers sqlite,redis,amqp] [--depths 10000,100000,1000000]
                          [--pools solo,prefork1,prefork2] [-n 20000] [--runs 3]
                          [--plot depth.png]

For each broker, pool and depth D: a start stamp, N no-ops and an end stamp go into an
empty queue, then D more no-ops behind them; a fastq worker (prefetch 256) drains the
first N + 2 while D wait behind, and its rate is N over the time between the stamps.
The queue is purged before the next depth. A claim whose cost grows with what the queue
holds (an O(n) scan, an index rewrite) shows here as a falling rate. The publisher's
rate into each broker, for the whole fill, is printed beside it.

``--pools`` picks the workers: ``solo`` (the default), ``prefork1`` and ``prefork2``
(``-P prefork -c 1`` / ``-c 2``). Each (broker, pool) pair is a table and a curve of its
own, labelled ``broker/pool``, or just ``broker`` when only solo is asked. Within a run
the depths, and the pools within each depth, take turns, so drift hits them all alike.
Under prefork 2 the stamps may run in different children, so a few no-ops of the other
child can fall just outside the window; against N of thousands that is noise.

``CPU µs/task`` stands in for instructions per task (the VM has no hardware counters):
the user + system CPU time of the worker and its children (the prefork children; those
already reaped count through their parent's cutime/cstime), read from ``/proc`` when
the start stamp appears and again when the end stamp appears, over N. It is a sample
at stamp time: the files are polled every 10 ms and the kernel counts in clock ticks
(10 ms at 100 Hz), so each end is off by about that much CPU per busy process; runs of
a second or more keep this to a few percent. Linux only.

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

from bench.throughput import read_stamps_and_cpu, stop_worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BROKERS = {
    "sqlite": None,  # a file in a temporary directory, made per run
    "redis": "redis://127.0.0.1:6379/6",
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
}

WORKER = [sys.executable, "-m", "fastq.cli", "worker", "-A", "bench.apps",
          "--prefetch-multiplier", "256", "-l", "warning"]

#: The pool arguments of each worker measured (--pools).
POOLS = {
    "solo": ["-P", "solo"],
    "prefork1": ["-P", "prefork", "-c", "1"],
    "prefork2": ["-P", "prefork", "-c", "2"],
}

def parse_pools(text: str) -> list[str]:
    """``solo,prefork2`` as a list, in the order given, once each; ValueError if unknown."""
    pools = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in pools if p not in POOLS]
    if unknown or not pools:
        raise ValueError(f"unknown pool(s) {', '.join(map(repr, unknown)) or '(none given)'};"
                         f" choose from {', '.join(POOLS)}, comma-separated")
    return pools


def label(broker: str, pool: str, pools: list[str]) -> str:
    """The broker's name alone when only solo is measured, so the default output keeps
    its shape; ``broker/pool`` otherwise."""
    return broker if pools == ["solo"] else f"{broker}/{pool}"


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


def drain(pool: str, count: int, start_path: str, end_path: str,
          timeout: float) -> tuple[float, float]:
    """Run a worker until the end stamp is written; the rate between the stamps and the
    worker tree's CPU µs per task over them."""
    env = dict(os.environ, BENCH_FLAVOUR="fastq",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    log_path = end_path + ".log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(WORKER + POOLS[pool], env=env, cwd=os.path.dirname(end_path),
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        started, ended, cpu, _ = read_stamps_and_cpu(proc, "fastq", count, start_path,
                                                     end_path, log_path, timeout)
    finally:
        stop_worker(proc)
    return count / (ended - started), cpu / count * 1e6


def one_broker(depths: list[int], pools: list[str], count: int, runs: int,
               timeout: float) -> dict:
    """In the child process for one broker:
    ``{pool: {depth: {"drain": [...], "publish": [...], "cpu": [...]}}}``."""
    from bench.apps import QUEUE, app

    figures: dict[str, dict[int, dict[str, list[float]]]] = {
        p: {d: {"drain": [], "publish": [], "cpu": []} for d in depths} for p in pools}
    try:
        for _run in range(runs):
            for depth in depths:  # interleaved, so drift hits every depth and pool alike
                for pool in pools:
                    with tempfile.TemporaryDirectory(prefix="fastq-depth-") as tmp:
                        start, end = os.path.join(tmp, "start"), os.path.join(tmp, "end")
                        cell = figures[pool][depth]
                        cell["publish"].append(fill(count, depth, start, end))
                        rate, cpu = drain(pool, count, start, end, timeout)
                        cell["drain"].append(rate)
                        cell["cpu"].append(cpu)
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
    parser.add_argument("--pools", default="solo",
                        help=f"comma-separated, from: {', '.join(POOLS)}")
    parser.add_argument("-n", "--tasks", type=int, default=20_000,
                        help="tasks timed at each depth")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--plot", default=None, help="draw the curves into this PNG")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",") if d]
    try:
        pools = parse_pools(args.pools)
    except ValueError as exc:
        parser.error(str(exc))
    if args.plot:
        import matplotlib  # noqa: F401 - fail now rather than after minutes of filling
    if args.child:
        print(json.dumps(one_broker(depths, pools, args.tasks, args.runs, args.timeout)))
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
                 args.depths, "--pools", ",".join(pools), "-n", str(args.tasks),
                 "--runs", str(args.runs), "--timeout", str(args.timeout)],
                env=env, stdout=subprocess.PIPE, check=True).stdout
        by_pool = json.loads(out.decode().splitlines()[-1])
        for pool in pools:
            figures = {int(d): v for d, v in by_pool[pool].items()}
            curve = label(name, pool, pools)
            drains[curve] = {d: figures[d]["drain"] for d in depths}
            print_table(curve, figures, depths, args.tasks, args.runs)
    if args.plot:
        plot(drains, args.plot)
        print(f"curves drawn in {args.plot}")
    return drains


def print_table(curve: str, figures: dict[int, dict[str, list[float]]], depths: list[int],
                count: int, runs: int) -> None:
    """One (broker, pool) pair: a line per depth."""
    print(f"\n{curve}: {count:,} no-ops timed in front of D more, median of {runs} run(s)")
    print(f"{'depth':>10s} {'tasks/s':>10s} {'range':>21s} {'vs first':>9s} "
          f"{'publish/s':>10s} {'CPU µs/task':>12s}")
    first = statistics.median(figures[depths[0]]["drain"])
    for depth in depths:
        rates = figures[depth]["drain"]
        med = statistics.median(rates)
        print(f"{depth:>10,d} {med:>10,.0f} {min(rates):>10,.0f}-{max(rates):<10,.0f} "
              f"{med / first:>9.0%} {statistics.median(figures[depth]['publish']):>10,.0f} "
              f"{statistics.median(figures[depth]['cpu']):>12,.1f}", flush=True)


def draw(ax, drains: dict[str, dict[int, list[float]]]) -> None:
    """Median throughput against depth, one line per broker (and pool), min-max as a
    band."""
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
