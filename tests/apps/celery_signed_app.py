"""A real Celery app that accepts only signed tasks (Celery's auth serializer), for the
signing interop tests; broker from FASTQ_BROKER_URL, PEM files from
FASTQ_TEST_SECURITY_DIR (key.pem, cert.pem, store/);
FASTQ_TEST_SIGN_RESULTS=1 signs results too."""

import os

from celery import Celery

from tests.pki import signing_settings

app = Celery("tests.apps.celery_signed_app", broker=os.environ["FASTQ_BROKER_URL"],
             backend=os.environ["FASTQ_RESULT_BACKEND"])
app.conf.update(broker_connection_retry_on_startup=True,
                **signing_settings(os.environ["FASTQ_TEST_SECURITY_DIR"]))
# FASTQ_TEST_SIGN_RESULTS=1: results signed too (test_celery_signed_results.py)
if os.environ.get("FASTQ_TEST_SIGN_RESULTS"):
    app.conf.update(result_serializer="auth", result_accept_content=["auth"])
app.setup_security()


@app.task(name="signed.add")
def add(x, y):
    return x + y
