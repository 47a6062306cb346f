"""The worker side of examples/pyramid_app.py: loads the ini named by ``PYRAMID_INI`` once
per worker process, so tasks reach the same registry and settings as the web app."""

import os

from pyramid.paster import bootstrap

fastq_app = bootstrap(os.environ.get("PYRAMID_INI", "examples/pyramid.ini"))["registry"].fastq_app
