"""A signed-messages app for the signing tests: broker from FASTQ_BROKER_URL, PEM files
from FASTQ_TEST_SECURITY_DIR (key.pem, cert.pem, store/)."""

import os

from fastq import App
from tests.pki import signing_settings

app = App("tests.apps.signed_app")
app.conf.update(**signing_settings(os.environ["FASTQ_TEST_SECURITY_DIR"]))
app.setup_security()


@app.task(name="signed.add")
def add(x, y):
    return x + y
