"""A moto SQS server for the tests, started once per session on its own loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

#: Dummy credentials and the region every SQS test uses; moto accepts any credentials.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1",
           # never send the tests' traffic through a proxy, nor read real AWS config
           "NO_PROXY": "127.0.0.1,localhost", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a moto server, with AWS_* set for this session."""
    pytest.importorskip("boto3")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port),
                             "-H", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT)
    saved = {key: os.environ.get(key) for key in (*AWS_ENV, "AWS_SESSION_TOKEN")}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on port {port}: "
                                f"{log_path.read_text(errors='replace')}")
                time.sleep(0.1)
        os.environ.update(AWS_ENV)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        yield f"http://127.0.0.1:{port}"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def sqs_prefix() -> str:
    """A queue name prefix unique to the test, so tests share the server but no queues."""
    return f"fq{uuid.uuid4().hex[:10]}-"


@pytest.fixture
def sqs_client(moto_endpoint):
    """A plain boto3 client on the moto server, to look at what the broker did."""
    import boto3

    client = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    yield client
    client.close()
