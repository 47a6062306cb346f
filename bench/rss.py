"""Worker memory: RSS over a long run of no-op tasks (flat?) and idle RSS, fastq vs Celery.

    python -m bench.rss [-n 1000000] [--pool solo] [--idle-only]

Idle: each worker starts on an empty RabbitMQ queue and its RSS is read after it settles.
Long run: one fastq worker drains ``-n`` no-op tasks published alongside in chunks (the
queue is kept under ~100k messages so the broker is not the story); RSS is sampled from
/proc with the worker's own count of acked tasks from its health file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IDLE_SETTLE = 5.0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _env(flavour: str, tmp: str) -> dict:
    return dict(os.environ, BENCH_FLAVOUR=flavour, FASTQ_WORKER_STATE_DIR=tmp,
                PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))


def _fastq_command(pool: str, health: str) -> list[str]:
    return [sys.executable, "-m", "fastq", "worker", "-A", "bench.apps", "-P", pool,
            "--prefetch-multiplier", "256", "--health-file", health, "-l", "warning"]


CELERY = [sys.executable, "-m", "celery", "-A", "bench.apps", "worker", "-P", "solo", "-c",
          "1", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"]


def idle(pool: str) -> dict[str, int]:
    out = {}
    with tempfile.TemporaryDirectory(prefix="fastq-rss-") as tmp:
        for name, flavour, command in (
                ("fastq", "fastq", _fastq_command(pool, os.path.join(tmp, "h.json"))),
                ("celery", "celery", CELERY)):
            proc = subprocess.Popen(command, env=_env(flavour, tmp), cwd=tmp,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(IDLE_SETTLE)
                out[name] = rss_kib(proc.pid)
            finally:
                proc.terminate()
                proc.wait(30)
    return out


def long_run(count: int, pool: str) -> list[tuple[int, int]]:
    """(tasks acked, RSS KiB) samples over the run."""
    os.environ.setdefault("BENCH_FLAVOUR", "fastq")
    from bench.apps import QUEUE, app

    app.broker.purge(QUEUE)
    samples: list[tuple[int, int]] = []
    with tempfile.TemporaryDirectory(prefix="fastq-rss-") as tmp:
        health = os.path.join(tmp, "h.json")
        proc = subprocess.Popen(_fastq_command(pool, health), env=_env("fastq", tmp), cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            published, chunk, last_sample = 0, 20_000, 0.0
            acked = 0
            while acked < count:
                if published < count and app.broker.queue_sizes().get(QUEUE, 0) < 100_000:
                    n = min(chunk, count - published)
                    app.send_many([("bench.noop", (), None)] * n, queue=QUEUE)
                    published += n
                else:
                    time.sleep(0.2)
                if time.monotonic() - last_sample >= 2.0:
                    last_sample = time.monotonic()
                    try:
                        with open(health, "rb") as fh:
                            acked = orjson.loads(fh.read())["counters"]["acked"]
                    except (OSError, ValueError):
                        continue
                    samples.append((acked, rss_kib(proc.pid)))
                    print(f"{acked:>10,} tasks  RSS {samples[-1][1]:>8,} KiB", flush=True)
                if proc.poll() is not None:
                    raise SystemExit(f"the worker exited {proc.returncode}")
        finally:
            proc.terminate()
            proc.wait(60)
            app.close()
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--tasks", type=int, default=1_000_000)
    parser.add_argument("--pool", default="solo")
    parser.add_argument("--idle-only", action="store_true")
    args = parser.parse_args(argv)
    rest = idle(args.pool)
    print(f"idle RSS after {IDLE_SETTLE:g} s: fastq ({args.pool}) {rest['fastq']:,} KiB, "
          f"Celery 5.7 (solo) {rest['celery']:,} KiB ({rest['fastq'] / rest['celery']:.0%})")
    if args.idle_only:
        return
    samples = long_run(args.tasks, args.pool)
    warm = next((s for s in samples if s[0] >= args.tasks // 10), samples[0])
    end = samples[-1]
    peak = max(s[1] for s in samples)
    print(f"\n{args.tasks:,} no-op tasks on -P {args.pool}: RSS {warm[1]:,} KiB after "
          f"{warm[0]:,} tasks, {end[1]:,} KiB after {end[0]:,} "
          f"({(end[1] - warm[1]) / warm[1]:+.1%}); peak {peak:,} KiB")


if __name__ == "__main__":
    main()
