"""Where the project's hooks and signal receivers write what happened: one line a
record in the file named by COMPAT_EVENTS (the checks read it back)."""

import json
import os


def record(kind, *values):
    path = os.environ.get("COMPAT_EVENTS")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps([kind, *[str(v) for v in values]]) + "\n")


def read():
    path = os.environ.get("COMPAT_EVENTS")
    if not path or not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
