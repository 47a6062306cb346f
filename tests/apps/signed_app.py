"""A signed-messages app for the signing tests: broker from FASTQ_BROKER_URL, PEM files
from FASTQ_TEST_SECURITY_DIR (key.pem, cert.pem, store/);
FASTQ_TEST_SIGN_RESULTS=1 signs results too."""

import os

from fastq import App
from tests.pki import signing_settings

app = App("tests.apps.signed_app")
app.conf.update(**signing_settings(os.environ["FASTQ_TEST_SECURITY_DIR"]))
# FASTQ_TEST_SIGN_RESULTS=1: results signed too (test_celery_signed_results.py)
if os.environ.get("FASTQ_TEST_SIGN_RESULTS"):
    app.conf.update(result_serializer="auth")
app.setup_security()


@app.task(name="signed.add")
def add(x, y):
    return x + y
