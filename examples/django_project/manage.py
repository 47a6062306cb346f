#!/usr/bin/env python
"""Django's command line for the example project: a Django app whose view sends a fastq
task and another reads its result from the project's database (``django-db://``).

Run it from this directory, with Redis on 127.0.0.1::

    python manage.py migrate
    fastq worker -A proj
    python manage.py runserver 127.0.0.1:8000

    curl -X POST 'localhost:8000/sums?x=2&y=3'        # {"task_id": "..."}
    curl 'localhost:8000/sums/<task_id>?wait=10'      # {"task_id": "...", "value": 5}
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
