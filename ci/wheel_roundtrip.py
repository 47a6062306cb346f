"""ci/wheel.sh's last check: tasks through RabbitMQ on an installed wheel's rabbitmq-c path.

Run from a directory outside the source tree with the fresh virtualenv's python and
FASTQ_REQUIRE_SPEEDUPS=1. The file is also the app module of the worker it starts
(``-A wheel_roundtrip``), so producer and worker share one App definition.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

from fastq import App

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
#: The worker and this process both run in the check's temporary directory.
RESULTS = "sqlite:///" + os.path.abspath("results.sqlite3")
COUNT = 200

app = App("wheel_roundtrip", broker=BROKER, result_backend=RESULTS)


@app.task(name="wheel_roundtrip.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="wheel_roundtrip.probe")
def probe() -> dict:
    """What the worker process runs on: the module files and the shared objects it mapped."""
    import fastq._speedups._amqp as c_amqp
    import fastq.worker.consumer as consumer

    with open("/proc/self/maps") as fh:
        mapped = sorted({line.split()[-1] for line in fh if ".so" in line})
    return {"amqp_module": c_amqp.__file__, "consumer": consumer.IMPLEMENTATION,
            "rabbitmq_c": c_amqp.RABBITMQ_C_VERSION, "mapped": mapped}


def fail(message: str) -> None:
    sys.exit(f"ci/wheel.sh: FAILED: round trip: {message}")


def wait_for_worker(proc: subprocess.Popen, health_file: str, log: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"the worker exited with code {proc.returncode}:\n{read(log)}")
        try:
            with open(health_file) as fh:
                if json.load(fh).get("state") == "consuming":
                    return
        except (OSError, ValueError):  # not written yet, or half-written
            pass
        time.sleep(0.05)
    fail(f"the worker was not consuming within 15 s:\n{read(log)}")


def read(path: str) -> str:
    with open(path, errors="replace") as fh:
        return fh.read()[-4000:]


def delete_queues(queue: str) -> None:
    from fastq._speedups._amqp import Connection

    try:
        with Connection("127.0.0.1", 5672) as conn:
            for name in (queue, queue + ".dead"):
                conn.delete_queue(name)
    except Exception as exc:  # the check's own verdict matters more than the tidying
        print(f"ci/wheel.sh: could not delete queue {queue}: {exc}", file=sys.stderr)


def main() -> None:
    if os.environ.get("FASTQ_REQUIRE_SPEEDUPS") != "1":
        fail("run me with FASTQ_REQUIRE_SPEEDUPS=1")
    from fastq._speedups._amqp import Connection

    try:
        with Connection("127.0.0.1", 5672):
            pass
    except Exception as exc:
        fail(f"RabbitMQ is not answering on 127.0.0.1:5672 ({exc}); start it: bash ci/services.sh")
    # a unique queue: two checks running at once must not take each other's tasks
    queue = f"fastq-wheel-check-{uuid.uuid4().hex[:10]}"
    health_file, log = os.path.abspath("worker.json"), os.path.abspath("worker.log")
    driver = app.broker.driver_name
    if driver != "rabbitmq-c":
        fail(f"this process's AMQP driver is {driver!r}, not rabbitmq-c")
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastq", "worker", "-A", "wheel_roundtrip", "-Q", queue,
             "-l", "info", "--health-file", health_file], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_worker(proc, health_file, log)
        results = add.delay_many([(i, i) for i in range(COUNT)], queue=queue)
        seen = probe.apply_async(queue=queue).get(timeout=20)
        values = [r.get(timeout=20) for r in results]
        if values != [2 * i for i in range(COUNT)]:
            fail(f"wrong results: {values[:10]}...")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        delete_queues(queue)
    if proc.returncode != 0:
        fail(f"the worker exited with code {proc.returncode} after SIGTERM:\n{read(log)}")
    site = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["fastq"].__file__)))
    if not seen["amqp_module"].startswith(site):
        fail(f"the worker imported {seen['amqp_module']}, not the wheel under {site}")
    if seen["consumer"] != "c":
        fail(f"the worker ran the {seen['consumer']!r} consumer, not the compiled one")
    system_rabbitmq = [path for path in seen["mapped"] if "librabbitmq" in path]
    if system_rabbitmq:
        fail(f"the worker mapped a shared librabbitmq: {system_rabbitmq}")
    print(f"ci/wheel.sh: round trip: {COUNT + 1} tasks through RabbitMQ in "
          f"{time.monotonic() - started:.1f} s; worker on rabbitmq-c {seen['rabbitmq_c']} "
          f"(linked in), compiled consumer, from {seen['amqp_module']}")


if __name__ == "__main__":
    main()
