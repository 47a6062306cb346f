"""The Django side of the project (its unit tests set DJANGO_SETTINGS_MODULE to this)."""

SECRET_KEY = "compat-tests-only"
USE_TZ = True
INSTALLED_APPS = []
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
