"""A Flask app made by a factory whose fastq tasks read ``flask.current_app``."""

import asyncio

from flask import Flask, current_app

from fastq.contrib.flask import FastQ

fastq = FastQ()


@fastq.task(name="flask.greet")
def greet(name):
    return f"{current_app.config['GREETING']}, {name}, from {current_app.name}"


@fastq.task(name="flask.agreet")
async def agreet(name):
    await asyncio.sleep(0)
    return f"{current_app.config['GREETING']} (async), {name}"


def create_app(**config):
    """The factory: settings from the mapping, ``FLASK_*`` variables, then ``config``."""
    app = Flask("tests.apps.flask_app")
    app.config.from_mapping(GREETING="Hello")
    app.config.from_prefixed_env()
    app.config.update(config)
    fastq.init_app(app)

    @app.post("/greet/<name>")
    def enqueue(name):
        return {"task_id": greet.delay(name).id}

    @app.get("/result/<task_id>")
    def result(task_id):
        found = fastq.fastq_app.AsyncResult(task_id)
        return {"state": found.state, "value": found.result if found.ready() else None}

    return app
