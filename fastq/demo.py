"""The demo job: a worker process on the embedded broker draining a batch of tasks."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import click
import orjson

from . import _speedups
from .app import App

#: The demo App; the worker process finds its broker through FASTQ_BROKER_URL.
app = App("fastq.demo")


@app.task(name="fastq.demo.add")
def add(x: int, y: int) -> int:
    return x + y


def _wait_for_worker(health_file: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"the demo worker exited with code {proc.returncode}")
        try:
            with open(health_file, "rb") as fh:
                if orjson.loads(fh.read()).get("state") == "consuming":
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise click.ClickException("the demo worker did not start within 30 s")


def one_run(count: int, results: bool, broker: str | None, workdir: str,
            prefetch: int | None = None) -> dict:
    """Publish ``count`` add() tasks to a running worker; time them end to end."""
    url = broker or f"sqlite:///{os.path.join(workdir, 'broker.sqlite3')}"
    env = dict(os.environ, FASTQ_BROKER_URL=url,
               FASTQ_WORKER_STATE_DIR=os.path.join(workdir, "workers"))
    health_file = os.path.join(workdir, "worker.json")
    producer = App("fastq.demo", broker=url)
    producer.tasks["fastq.demo.add"] = add
    producer.broker.purge("celery")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastq.cli", "worker", "-A", "fastq.demo", "-l", "warning",
         "--health-file", health_file,
         *(["--prefetch-multiplier", str(prefetch)] if prefetch is not None else [])], env=env)
    try:
        _wait_for_worker(health_file, proc)
        started = time.perf_counter()
        handles = []
        chunk = 1000
        for first in range(0, count, chunk):
            pairs = [((i, i),) for i in range(first, min(first + chunk, count))]
            handles.extend(producer.send_many(
                [("fastq.demo.add", args[0], None) for args in pairs],
                ignore_result=not results))
        published = time.perf_counter()
        last = producer.send_task("fastq.demo.add", (count, count))  # FIFO: it comes last
        last.get(timeout=600)
        finished = time.perf_counter()
        checked = 0
        if results:
            backend = producer.backend
            for first in range(0, len(handles), 5000):
                ids = [h.id for h in handles[first:first + 5000]]
                stored = backend._get_many(ids)
                for i, task_id in enumerate(ids, start=first):
                    meta = orjson.loads(stored[task_id])
                    if meta["status"] != "SUCCESS" or meta["result"] != 2 * i:
                        raise click.ClickException(f"task {i} ({task_id}) ended {meta}")
                    checked += 1
        return {"publish_per_s": count / (published - started),
                "end_to_end_per_s": (count + 1) / (finished - started),
                "seconds": finished - started, "checked": checked}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        producer.close()


def run_demo(count: int, runs: int, results: bool, broker: str | None,
             prefetch: int | None = None) -> list[dict]:
    """Run the demo ``runs`` times and print each run and the median."""
    # the worker inherits this environment, so it runs the consumer named here
    click.echo(f"fastq demo: {count:,} tasks, {runs} run(s); the worker's consumer: "
               f"{_speedups.status('_consumer').describe()}")
    figures = []
    for run in range(1, runs + 1):
        with tempfile.TemporaryDirectory(prefix="fastq-demo-") as workdir:
            fig = one_run(count, results, broker, workdir, prefetch)
        figures.append(fig)
        verified = f", {fig['checked']} results verified" if results else ""
        click.echo(f"run {run}: {count} tasks in {fig['seconds']:.2f}s end to end = "
                   f"{fig['end_to_end_per_s']:,.0f} tasks/s (publish {fig['publish_per_s']:,.0f}"
                   f"/s){verified}")
    rates = [f["end_to_end_per_s"] for f in figures]
    click.echo(f"median over {runs} run(s): {statistics.median(rates):,.0f} tasks/s "
               f"(range {min(rates):,.0f}-{max(rates):,.0f}), one solo worker process "
               f"(prefetch {'adaptive' if prefetch is None else prefetch}), "
               f"{'results stored' if results else 'results ignored'}, "
               f"broker {broker or 'embedded SQLite'}")
    return figures
