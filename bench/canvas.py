"""Chords and chains, fastq vs Celery 5.7 on the same Redis in the same run: the time
from sending a workflow to its last result, and the Redis commands it cost per task.

    python -m bench.canvas [--members 10000] [--steps 1000] [--runs 3]

Each contender gets one solo worker process (fastq: compiled consumer; Celery: without
gossip, mingle and heartbeat) on Redis with Redis results, and runs a chord of
``--members`` ``bench.echo`` tasks with a ``bench.tsum`` body, then a chain of
``--steps`` ``bench.inc`` tasks. Commands are Redis's ``INFO commandstats`` calls before
and after each workflow, everything included (the client's publishes and result waits,
the worker's fetches, acks, stores and joins), divided by the tasks run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.throughput import stop_worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
QUEUE = "bench-canvas"

WORKERS = {
    "fastq": ({"BENCH_FLAVOUR": "fastq", "FASTQ_REQUIRE_SPEEDUPS": "1"},
              [sys.executable, "-m", "fastq.cli", "worker", "-A", "bench.apps", "-P", "solo",
               "-Q", QUEUE, "-l", "warning"]),
    "celery": ({"BENCH_FLAVOUR": "celery"},
               [sys.executable, "-m", "celery", "-A", "bench.apps", "worker", "-P", "solo",
                "-c", "1", "-Q", QUEUE, "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-l", "warning"]),
}


def redis_calls(client) -> int:
    return sum(stat["calls"] for stat in client.info("commandstats").values())


def client_app(flavour: str):
    if flavour == "fastq":
        from fastq import App

        return App("bench-canvas", broker=REDIS_URL, backend=REDIS_URL,
                   task_default_queue=QUEUE)
    from celery import Celery

    app = Celery("bench-canvas", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.task_default_queue = QUEUE
    return app


def workflows(flavour: str, app, members: int, steps: int):
    """``(name, tasks it runs, function sending it and waiting for its result)``."""
    if flavour == "fastq":
        from fastq import chain, chord, signature
    else:
        from celery import chain, chord, signature

    def a_chord():
        header = [signature("bench.echo", (i,), app=app) for i in range(members)]
        result = chord(header)(signature("bench.tsum", app=app))
        assert result.get(timeout=600) == members * (members - 1) // 2

    def a_chain():
        first = signature("bench.inc", (0,), app=app)
        rest = [signature("bench.inc", app=app) for _ in range(steps - 1)]
        assert chain(first, *rest).apply_async().get(timeout=600) == steps

    return [("chord", members + 1, a_chord), ("chain", steps, a_chain)]


def run(flavour: str, members: int, steps: int) -> dict[str, tuple[float, float]]:
    """One worker of ``flavour``: each workflow's seconds and Redis commands per task."""
    import redis

    server = redis.Redis.from_url(REDIS_URL)
    server.flushdb()
    env_extra, command = WORKERS[flavour]
    env = dict(os.environ, **env_extra, BENCH_BROKER_URL=REDIS_URL, BENCH_RESULTS=REDIS_URL,
               BENCH_QUEUE=QUEUE,
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    app = client_app(flavour)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="fastq-bench-canvas-") as tmp:
        log = open(os.path.join(tmp, "log"), "wb")
        proc = subprocess.Popen(command, env=env, cwd=tmp, stdout=log, stderr=log)
        try:
            # warm up: the worker is consuming once a task comes back
            app.send_task("bench.inc", (1,), queue=QUEUE).get(timeout=60)
            for name, tasks, send_and_wait in workflows(flavour, app, members, steps):
                before = redis_calls(server)
                started = time.perf_counter()
                send_and_wait()
                seconds = time.perf_counter() - started
                figures[name] = (seconds, (redis_calls(server) - before) / tasks)
        finally:
            stop_worker(proc)
            log.close()
            app.close()
            server.flushdb()
            server.close()
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.canvas", description=__doc__)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="fastq,celery")
    options = parser.parse_args(argv)
    flavours = options.only.split(",")
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for run_number in range(options.runs):
        for flavour in flavours:  # alternating, so drift on the machine hits both
            for name, figure in run(flavour, options.members, options.steps).items():
                samples.setdefault((flavour, name), []).append(figure)
        print(f"run {run_number + 1}/{options.runs} done", file=sys.stderr)
    print(f"medians of {options.runs} runs; chord of {options.members} echo tasks + a sum "
          f"body, chain of {options.steps} inc tasks; Redis {REDIS_URL}")
    medians = {}
    for (flavour, name), values in sorted(samples.items(), key=lambda kv: kv[0][::-1]):
        seconds = statistics.median(v[0] for v in values)
        commands = statistics.median(v[1] for v in values)
        medians[(flavour, name)] = (seconds, commands)
        print(f"  {name:6s} {flavour:7s} {seconds:8.2f} s   {commands:6.1f} Redis commands/task")
    for name in ("chord", "chain"):
        if ("fastq", name) in medians and ("celery", name) in medians:
            fast, slow = medians[("fastq", name)], medians[("celery", name)]
            print(f"  {name}: fastq {slow[0] / fast[0]:.1f}x faster, "
                  f"{slow[1] / fast[1]:.1f}x fewer commands per task")
    return medians


if __name__ == "__main__":
    main()
