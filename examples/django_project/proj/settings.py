"""Settings of the example project: an SQLite database, fastq's broker and results.

``DJANGO_EXAMPLE_DB`` names the SQLite file (default: ``db.sqlite3`` beside manage.py);
``FASTQ_BROKER_URL`` and other ``FASTQ_*`` variables win over the ``CELERY_*`` below.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
INSTALLED_APPS = ["fastq.contrib.django", "sums"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "proj.urls"
DATABASES = {"default": {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": os.environ.get("DJANGO_EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
#: Added to every sum by ``sums.add``; a setting its worker reads.
SUMS_OFFSET = int(os.environ.get("SUMS_OFFSET", "0"))

CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
# results in this project's database, through the ORM (run `manage.py migrate` once)
CELERY_RESULT_BACKEND = "django-db://"
