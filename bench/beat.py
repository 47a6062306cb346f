"""The beat's cost with many entries: CPU seconds per wall second, store round trips per
tick, runs sent.

    python -m bench.beat [--entries 1000] [--seconds 20] [--store sqlite|redis]

The entries: a quarter every 1-60 s, the rest crontabs (every minute, every 5, hourly,
daily), the mix a large deployment has. The beat runs in this process with
``--max-interval 5`` (the default) and publishes to a SQLite broker (``--store sqlite``,
the embedded default) or Redis; its CPU time is ``time.process_time()`` over the run.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    args = parser.parse_args(argv)

    from fastq.app import App
    from fastq.beat import Beat
    from fastq.schedules import crontab

    rng = random.Random(1)
    schedule = {}
    for n in range(args.entries):
        if n % 4 == 0:
            when = float(rng.randint(1, 60))
        else:
            when = rng.choice([crontab(), crontab(minute="*/5"), crontab(minute=rng.randint(0, 59)),
                               crontab(minute=0, hour=rng.randint(0, 23))])
        schedule[f"entry-{n}"] = {"task": "bench.noop", "schedule": when}
    tmp = tempfile.mkdtemp(prefix="fastq-bench-beat-")
    if args.store == "sqlite":
        app = App(broker=f"sqlite:///{tmp}/broker.sqlite3", beat_schedule=schedule)
    else:
        app = App(broker="redis://127.0.0.1:6379/9", backend="redis://127.0.0.1:6379/9",
                  beat_schedule=schedule, task_default_queue=f"bench-beat-{os.getpid()}",
                  result_backend_transport_options={
                      "global_keyprefix": f"bench-beat-{os.getpid()}:"})
    beat = Beat(app)
    stop = threading.Event()
    thread = threading.Thread(target=beat.run, args=(stop,))
    beat.tick()  # the first refresh (schema, first runs) is not the steady state
    trips0, ticks0, sent0 = beat.store.round_trips, beat.ticks, beat.sent
    cpu0, wall0 = time.process_time(), time.monotonic()
    thread.start()
    time.sleep(args.seconds)
    stop.set()
    thread.join()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    trips, ticks = beat.store.round_trips - trips0, beat.ticks - ticks0
    figures = {"entries": args.entries, "store": args.store, "seconds": round(wall, 1),
               "cpu_percent": round(100 * cpu / wall, 2), "ticks": ticks,
               "round_trips": trips, "round_trips_per_tick": round(trips / max(ticks, 1), 2),
               "sent": beat.sent - sent0}
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    if args.store == "redis":
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/9")
        keys = list(client.scan_iter(match=f"bench-beat-{os.getpid()}:*"))
        keys.append(f"bench-beat-{os.getpid()}")
        client.delete(*keys)
    return figures


if __name__ == "__main__":
    main()
