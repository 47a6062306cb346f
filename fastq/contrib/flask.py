"""Flask extension: a fastq App configured from ``app.config`` whose tasks run inside the Flask app's context.

::

    fastq = FastQ()                      # in proj/extensions.py

    @fastq.task                          # in proj/tasks.py
    def send_mail(to): current_app.extensions["mail"].send(to)

    def create_app():                    # the app factory
        app = Flask(__name__)
        app.config.from_mapping(CELERY_BROKER_URL="redis://...", FASTQ_RESULT_BACKEND="redis://...")
        fastq.init_app(app)
        return app

The worker runs ``fastq worker -A proj.worker:fastq_app``, where ``proj/worker.py``
does ``fastq_app = create_app().extensions["fastq"].fastq_app``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..app import App
from ..exceptions import ConfigurationError
from ..task import Task

#: ``app.config`` keys read, lowest precedence first: a nested dict (Flask's own
#: documented Celery recipe, ``CELERY={"broker_url": ...}``), then prefixed keys.
#: ``FASTQ_*`` beats ``CELERY_*``; the process's ``FASTQ_*`` environment beats both.
NESTED_KEYS = ("CELERY", "FASTQ")
PREFIXES = ("CELERY_", "FASTQ_")


def settings_from_config(config: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """``(config key, setting name, value)`` for each fastq setting in a Flask config,
    in the order they are applied (later ones win)."""
    found: list[tuple[str, str, Any]] = []
    for nested_key, prefix in zip(NESTED_KEYS, PREFIXES):
        nested = config.get(nested_key)
        if isinstance(nested, Mapping):
            found.extend((f"{nested_key}[{name!r}]", name, value)
                         for name, value in nested.items())
        found.extend((key, key[len(prefix):].lower(), value)
                     for key, value in config.items() if key.startswith(prefix))
    return found


def configure_from_flask(fastq_app: App, config: Mapping[str, Any]) -> None:
    """Apply the fastq settings of a Flask config to ``fastq_app`` (environment still wins).

    Raises:
        ConfigurationError: a ``CELERY_*``/``FASTQ_*`` key names no setting (Celery 3's
            uppercase names such as ``CELERY_ALWAYS_EAGER`` are understood).
    """
    for key, name, value in settings_from_config(config):
        try:
            setattr(fastq_app.conf, name, value)
        except ConfigurationError as exc:
            try:
                setattr(fastq_app.conf, key, value)  # Celery 3's name: CELERY_ALWAYS_EAGER
            except ConfigurationError:
                raise ConfigurationError(f"Flask config key {key}: {exc}") from None
    # the process environment's FASTQ_* win, and connections follow the new URLs
    fastq_app.config_from_object({})


class FlaskTask(Task):
    """A task that runs inside its Flask app's ``app_context()`` (``flask.current_app``,
    extensions, ``g``), unless one is active already (a task called from a view)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import flask

        if flask.has_app_context():
            return super().__call__(*args, **kwargs)
        flask_app = flask_app_of(self.app)
        if inspect.iscoroutinefunction(self.run):
            return _in_context(flask_app, super().__call__(*args, **kwargs))
        with flask_app.app_context():
            return super().__call__(*args, **kwargs)


async def _in_context(flask_app: Any, coroutine: Any) -> Any:
    # an async task's body runs when awaited, so the context must be held until then
    with flask_app.app_context():
        return await coroutine


def flask_app_of(fastq_app: App) -> Any:
    """The Flask app ``FastQ.init_app`` last bound to ``fastq_app``.

    Raises:
        RuntimeError: ``init_app`` (or ``FastQ(app)``) was never called in this process.
    """
    flask_app = fastq_app.__dict__.get("flask_app")
    if flask_app is None:
        raise RuntimeError(f"fastq app {fastq_app.main!r} has no Flask app: call "
                           "FastQ(app) or fastq.init_app(app) (the app factory) in this "
                           "process before its tasks run")
    return flask_app


class FastQ:
    """The Flask extension; ``FastQ(app)``, or ``FastQ()`` then ``init_app(app)``.

    Parameters:
        app: the Flask app, or None to bind one later with ``init_app``.
        fastq_app: the fastq App to configure; a new one (named after the Flask app's
            import name at ``init_app``) when None. Its default task class becomes
            ``FlaskTask``.
        settings: fastq settings applied before the Flask config's.
    """

    def __init__(self, app: Any = None, fastq_app: App | None = None, **settings: Any) -> None:
        self.fastq_app = fastq_app if fastq_app is not None else App(**settings)
        if fastq_app is not None and settings:
            self.fastq_app.conf.update(settings)
        base = self.fastq_app.Task
        if not issubclass(base, FlaskTask):
            self.fastq_app.Task = type("FlaskTask", (FlaskTask, base), {})  # type: ignore[misc]
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Read ``app.config``'s fastq settings and run this App's tasks in ``app``'s
        context; registers itself as ``app.extensions["fastq"]``."""
        if self.fastq_app.main is None:
            self.fastq_app.main = app.import_name
        configure_from_flask(self.fastq_app, app.config)
        self.fastq_app.__dict__["flask_app"] = app
        app.extensions["fastq"] = self

    def task(self, *args: Any, **options: Any) -> Any:
        """``@fastq.task`` / ``@fastq.task(...)``: the App's decorator (``FlaskTask``s)."""
        return self.fastq_app.task(*args, **options)

    def send_task(self, name: str, *args: Any, **options: Any) -> Any:
        return self.fastq_app.send_task(name, *args, **options)


__all__ = ["FastQ", "FlaskTask", "configure_from_flask", "flask_app_of", "settings_from_config"]
