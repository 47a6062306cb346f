"""Django settings of the test project; the databases come from the environment.

``FASTQ_TEST_DJANGO_SQLITE``: path of the SQLite file (the ``default`` database).
``FASTQ_TEST_DJANGO_PG_NAME``: a PostgreSQL database on 127.0.0.1 (the ``postgres`` alias),
if set. The test process and its worker processes read the same variables.
"""

import os

SECRET_KEY = "fastq-tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages",
    "fastq.contrib.django", "tests.django_project.shop",
]
# what the admin pages need (tests/integration/test_django_admin.py)
ROOT_URLCONF = "tests.django_project.urls"
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("FASTQ_TEST_DJANGO_SQLITE", ":memory:"),
    },
}
if os.environ.get("FASTQ_TEST_DJANGO_PG_NAME"):
    DATABASES["postgres"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["FASTQ_TEST_DJANGO_PG_NAME"],
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
    }

FASTQ_RESULT_BACKEND = "django-db://"
FASTQ_RESULT_EXTENDED = True
FASTQ_TASK_DEFAULT_QUEUE = "django-tests"
