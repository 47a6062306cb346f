"""A worker imports only the broker it uses: on sqlite:// or memory:// no AMQP, Redis or SQS
module (fastq's, or the client library) is loaded, and nothing is logged about them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Modules of the brokers these workers do not use.
FOREIGN = ("fastq.brokers.amqp", "fastq.brokers.redis", "fastq.brokers.sqs",
           "fastq.brokers._amqp_py", "amqp", "redis", "boto3")

#: A worker in the subprocess's main thread (it installs signal handlers) runs 20 tasks,
#: a thread stops it once their results are in, then it reports what it loaded.
PROBE = textwrap.dedent("""
    import json, logging, os, signal, sys, threading
    from fastq import App
    from fastq.worker.supervisor import Worker, setup_logging

    setup_logging("info")
    app = App("probe", broker=sys.argv[1])

    @app.task(name="probe.add")
    def add(x, y):
        return x + y

    results = [add.delay(i, i) for i in range(20)]
    worker = Worker(app, health_file=os.path.join(sys.argv[2], "health.json"))
    values = []

    def stop_when_done():
        values.extend(r.get(timeout=30) for r in results)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_done, daemon=True).start()
    code = worker.run()
    print(json.dumps({"code": code, "values": values,
                      "loaded": [m for m in sys.argv[3:] if m in sys.modules]}))
""")


@pytest.mark.parametrize("speedups", ["default", "off"])
@pytest.mark.parametrize("scheme", ["sqlite", "memory"])
def test_a_worker_loads_no_other_broker(tmp_path, scheme, speedups) -> None:
    url = (f"sqlite:///{tmp_path}/broker.sqlite3" if scheme == "sqlite"
           else f"memory://{tmp_path.name}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTQ_")}
    env["PYTHONPATH"] = ROOT
    if speedups == "off":  # the pure-Python twins: where the AMQP module used to creep in
        env["FASTQ_NO_SPEEDUPS"] = "1"
    done = subprocess.run([sys.executable, "-c", PROBE, url, str(tmp_path), *FOREIGN],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"code": 0, "values": [2 * i for i in range(20)], "loaded": []}, \
        done.stderr
    # lifecycle is information; nothing here needs attention
    assert "WARNING" not in done.stderr and "remote control" not in done.stderr, done.stderr
    assert " ready: " in done.stderr and " stopped: 20 received" in done.stderr
