"""A minimal Django project for the django-db:// backend and task discovery tests."""
