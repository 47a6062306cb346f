"""The fastq command: worker, beat, schedule, call, result, purge, status, inspect, control, ..."""

from __future__ import annotations

if __name__ == "__main__":  # python -m fastq.cli: patch for a green pool before other imports
    from fastq._green import patch_for_command_line

    patch_for_command_line()

import importlib
import logging
import os
import sys
import time
from typing import Any

import click
import orjson

from .brokers import mask_url
from .exceptions import ConfigurationError, FastqError, ImproperlyInstalled
from .loader import AppLoadError, load_app

app_option = click.option("-A", "--app", "app_spec", envvar="FASTQ_APP",
                          help="Module holding the App: pkg.module or pkg.module:attr.")
ini_option = click.option("--ini", "ini_path", default=None, metavar="FILE",
                          help="Paste-style ini file (Pyramid, Pylons): settings from its "
                               "[fastq]/[celery] section and [app:main]'s fastq.*/celery.* "
                               "keys; its Pyramid app is built in each worker process.")


def _json_arg(value: str | None, what: str, kind: type) -> Any:
    if value is None:
        return kind()
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} must be JSON: {exc}") from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"{what} must be a JSON {kind.__name__}")
    return parsed


#: Exit code for a missing optional package (or compiled module): an install problem,
#: told apart from a task or broker failure (1), as click tells usage errors (2).
EXIT_NOT_INSTALLED = 2
#: Exit code for an --ini file that cannot configure the App: a usage error, as click's.
EXIT_BAD_INI = 2


def _load_app_with_ini(app_spec: str | None, ini_path: str | None) -> tuple[Any, str | None]:
    """The App from ``-A`` alone, or configured from ``--ini``; and the ``-A`` that spawned
    worker children are to use. A bad ini file ends the command with one line."""
    if ini_path is None:
        return load_app(app_spec), app_spec
    from .contrib.ini import export_for_children, load_app_from_ini

    try:
        app = load_app_from_ini(ini_path, app_spec)
    except ConfigurationError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_BAD_INI)
    return app, export_for_children(ini_path, app_spec)


class FastqGroup(click.Group):
    """The command group; a missing extra ends any command with its one-line fix."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImproperlyInstalled as exc:
            click.echo(str(exc), err=True)
            ctx.exit(EXIT_NOT_INSTALLED)
        except AppLoadError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=FastqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fastq")
def main() -> None:
    """fastq: a fast task queue that speaks Celery's protocol."""


@main.command()
@app_option
@ini_option
@click.option("-P", "--pool", default=None,
              help="Pool: solo (default), prefork (-c child processes).")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume.")
@click.option("-c", "--concurrency", type=int, default=None, help="Tasks run at once.")
@click.option("-l", "--loglevel", default="warning", show_default=True)
@click.option("--prefetch-multiplier", type=int, default=None,
              help="Messages held per slot, running ones included (0: one at a time); "
                   "without it the window adapts to how long the tasks take.")
@click.option("-n", "--hostname", default=None, help="Node name, e.g. w1@%h.")
@click.option("--health-file", default=None, help="Where to write the health JSON.")
@click.option("--start-method", type=click.Choice(["fork", "spawn", "forkserver"]),
              default=None, help="How prefork starts children (default: fork).")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), default=None,
              help="Replace a worker process after this many tasks.")
@click.option("--max-memory-per-child", type=click.IntRange(min=1), default=None,
              help="Replace a worker process whose resident size passes this (KiB).")
@click.option("--autoscale", default=None,
              help="MAX,MIN prefork children, grown when all are busy, shrunk when idle.")
@click.option("-B", "--beat", "embed_beat", is_flag=True,
              help="Also run the beat in this worker (the prefork parent only).")
@click.option("-E", "--task-events", "task_events", is_flag=True, default=None,
              help="Send task events (Flower, celery events); worker_send_task_events.")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
              help="Serve Prometheus metrics on this port (/metrics); worker_metrics_port.")
@click.option("--metrics-host", default=None,
              help="Address the metrics listen on (default 127.0.0.1); worker_metrics_host.")
@click.option("--statedb", default=None,
              help="File keeping the revoked task ids across restarts; worker_state_db.")
def worker(app_spec, ini_path, pool, queues, concurrency, loglevel, prefetch_multiplier,
           hostname, health_file, start_method, max_tasks_per_child, max_memory_per_child,
           autoscale, embed_beat, task_events, metrics_port, metrics_host, statedb) -> None:
    """Run a worker that executes tasks."""
    from .worker.supervisor import Worker, banner_logger, setup_logging

    try:
        setup_logging(loglevel)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--loglevel") from None
    if banner_logger.getEffectiveLevel() > logging.INFO:
        banner_logger.setLevel(logging.INFO)
    scale = None
    if autoscale is not None:
        from .worker.pools.prefork import parse_autoscale

        try:
            scale = parse_autoscale(autoscale)
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint="--autoscale") from None
        pool = pool or "prefork"
    app, app_spec = _load_app_with_ini(app_spec, ini_path)
    if statedb:
        app.conf.worker_state_db = statedb
    if hostname:
        import socket

        hostname = hostname.replace("%h", socket.gethostname())
    try:
        w = Worker(app, queues=[q for q in (queues or "").split(",") if q] or None, pool=pool,
                   concurrency=concurrency, prefetch_multiplier=prefetch_multiplier,
                   hostname=hostname, health_file=health_file, app_spec=app_spec,
                   start_method=start_method, max_tasks_per_child=max_tasks_per_child,
                   max_memory_per_child=max_memory_per_child, autoscale=scale,
                   beat=embed_beat, send_events=task_events or None,
                   metrics_port=metrics_port, metrics_host=metrics_host)
    except ImproperlyInstalled:
        raise  # the group prints it
    except FastqError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        code = w.run()
    except ConfigurationError as exc:  # found only once it runs (a metrics port in use)
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command()
@app_option
@ini_option
@click.option("-l", "--loglevel", default="info", show_default=True)
@click.option("--max-interval", type=click.FloatRange(min=0.01), default=None,
              help="Longest sleep between looks at the schedule, in seconds "
                   "(default: beat_max_loop_interval).")
@click.option("--dry-run", is_flag=True, help="Print the coming runs and exit; send nothing.")
@click.option("--until", default=None,
              help="With --dry-run: the last date to show, e.g. 2026-12-31 (default: a day).")
@click.option("-S", "--scheduler", default=None,
              help="'django': also the periodic tasks of django-celery-beat's tables "
                   "(Celery's django_celery_beat.schedulers:DatabaseScheduler works too); "
                   "default: the beat_scheduler setting.")
def beat(app_spec, ini_path, loglevel, max_interval, dry_run, until, scheduler) -> None:
    """Send periodic tasks when due; safe to run on several machines at once."""
    from datetime import datetime, timedelta, timezone

    from .beat import Beat
    from .worker.supervisor import setup_logging

    app, _ = _load_app_with_ini(app_spec, ini_path)
    sources = _beat_sources(app, scheduler)
    if dry_run:
        try:
            end = (datetime.fromisoformat(until) if until else
                   datetime.now(timezone.utc) + timedelta(days=1))
        except ValueError:
            raise click.BadParameter(f"not a date: {until!r}", param_hint="--until") from None
        if end.tzinfo is None:
            from .schedules import app_zone

            end = end.replace(tzinfo=app_zone(app))
        from ._beat_store import MemoryStore, open_store

        # a dry run on an AMQP-only app shows the configured entries (it has no others)
        beat = Beat(app, max_interval, store=open_store(app) or MemoryStore(),
                    sources=sources)
        shown = 0
        for at, entry in beat.upcoming(end):
            click.echo(f"{at.isoformat()}  {entry.name}  {entry.task}")
            shown += 1
        click.echo(f"{shown} run(s) until {end.isoformat()}")
        return
    try:
        setup_logging(loglevel)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--loglevel") from None
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        Beat(app, max_interval, sources=sources).run(stop)
    except FastqError as exc:
        raise click.ClickException(str(exc)) from None


def _beat_sources(app: Any, option: str | None) -> tuple:
    """The beat's sources of entries besides its own, from ``-S``, else from the
    ``beat_scheduler`` setting (``fastq.beat.scheduler_sources``)."""
    from .beat import scheduler_sources

    try:
        return scheduler_sources(app, option)
    except ImproperlyInstalled:
        raise  # the group prints it
    except ConfigurationError as exc:  # the message names -S or the setting
        error = click.ClickException(str(exc))
        error.exit_code = 2  # a usage error, as click's
        raise error from None


#: Exit code of a ``fastq schedule`` command on an App whose beats share no store: a
#: configuration problem, told as click tells usage errors.
EXIT_NO_SCHEDULE_STORE = 2


def _schedule_store(app):
    """The store ``fastq schedule`` edits; none on an AMQP-only App ends the command:
    an entry kept nowhere a beat reads would be lost without a word."""
    from ._beat_store import open_store

    store = open_store(app)
    if store is None:
        backend = app.conf.result_backend
        backend = mask_url(backend) if backend else "none"
        error = click.ClickException(
            f"fastq schedule needs a store the beats share, and this app has none (broker "
            f"{mask_url(app.broker_url)}, result backend {backend}): set result_backend "
            f"to a redis://, sqlite:// or db+ URL, where the beats keep their schedule, or "
            f"use beat_schedule in the configuration")
        error.exit_code = EXIT_NO_SCHEDULE_STORE
        raise error
    return store


@main.group()
def schedule() -> None:
    """Edit the periodic tasks kept in the database (a running beat sees the change
    within its --max-interval)."""


@schedule.command("add")
@app_option
@click.argument("name")
@click.option("--task", "task_name", required=True, help="Task name.")
@click.option("--cron", default=None, help='Crontab "m h dom mon dow", e.g. "*/5 * * * *".')
@click.option("--every", type=float, default=None, help="Interval in seconds.")
@click.option("--args", "args_json", default=None, help='Positional args as JSON: "[1, 2]".')
@click.option("--kwargs", "kwargs_json", default=None, help="Keyword args as JSON.")
@click.option("--queue", "-Q", default=None)
def schedule_add(app_spec, name, task_name, cron, every, args_json, kwargs_json,
                 queue) -> None:
    """Add (or replace) the periodic task NAME."""
    from .beat import Entry
    from .schedules import ParseException, crontab
    from .schedules import schedule as interval

    if (cron is None) == (every is None):
        raise click.UsageError("give one of --cron and --every")
    app = load_app(app_spec)
    try:
        when = crontab.from_string(cron, app=app) if cron else interval(every, app=app)
    except (ParseException, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--cron") from None
    entry = Entry(name, task_name, when, tuple(_json_arg(args_json, "--args", list)),
                  _json_arg(kwargs_json, "--kwargs", dict), {"queue": queue} if queue else {})
    store = _schedule_store(app)
    try:
        store.put_entry(name, entry.to_document())
    except ValueError as exc:  # a name too long for the store's keys (MySQL)
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    finally:
        store.close()
    click.echo(f"added {name}: {task_name} {when!r}")


@schedule.command("list")
@app_option
def schedule_list(app_spec) -> None:
    """List the periodic tasks kept in the database."""
    app = load_app(app_spec)
    store = _schedule_store(app)
    try:
        entries = store.entries()
    finally:
        store.close()
    for name, doc in sorted(entries.items()):
        state = "enabled" if doc.get("enabled", True) else "paused"
        click.echo(f"{name}  {doc['task']}  {orjson.dumps(doc['schedule']).decode()}  "
                   f"args={orjson.dumps(doc.get('args', [])).decode()}  {state}")
    if not entries:
        click.echo("(no periodic tasks in the database)")


def _schedule_edit_command(verb: str, help_text: str, action) -> None:
    """``fastq schedule <verb> NAME``: ``action(store, name)`` says whether NAME was there."""

    @schedule.command(verb, help=help_text)
    @app_option
    @click.argument("name")
    def command(app_spec, name) -> None:
        app = load_app(app_spec)
        store = _schedule_store(app)
        try:
            found = action(store, name)
        finally:
            store.close()
        if not found:
            raise click.ClickException(f"no periodic task {name!r} in the database")
        click.echo(f"{verb}d {name}")


_schedule_edit_command("remove", "Remove the periodic task NAME.",
                       lambda store, name: store.remove_entry(name))
_schedule_edit_command("pause", "Stop sending NAME until it is resumed.",
                       lambda store, name: store.set_enabled(name, False))
_schedule_edit_command("resume", "Send NAME again.",
                       lambda store, name: store.set_enabled(name, True))


@main.command()
@app_option
@click.argument("task_name")
@click.option("--args", "args_json", default=None, help='Positional args as JSON: "[1, 2]".')
@click.option("--kwargs", "kwargs_json", default=None, help='Keyword args as JSON.')
@click.option("--countdown", type=float, default=None)
@click.option("--queue", "-Q", default=None)
@click.option("--wait/--no-wait", default=False, help="Wait for the result and print it.")
@click.option("--timeout", type=float, default=None)
def call(app_spec, task_name, args_json, kwargs_json, countdown, queue, wait, timeout) -> None:
    """Send a task by name and print its id (or its result with --wait)."""
    app = load_app(app_spec)
    args = _json_arg(args_json, "--args", list)
    kwargs = _json_arg(kwargs_json, "--kwargs", dict)
    try:
        result = app.send_task(task_name, args, kwargs, countdown=countdown, queue=queue)
    except ImproperlyInstalled:
        raise  # the group prints it
    except FastqError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.id)
    if wait:
        _print_result(result, timeout)


def _print_result(result, timeout: float | None) -> None:
    from .exceptions import ResultTimeout

    try:
        value = result.get(timeout=timeout, propagate=False)
    except ResultTimeout as exc:
        raise click.ClickException(str(exc)) from None
    if result.state == "SUCCESS":
        click.echo(orjson.dumps(value, default=repr).decode())
    else:
        click.echo(f"{result.state}: {value!r}")
        if result.traceback:
            click.echo(result.traceback.rstrip(), err=True)
        sys.exit(1)


@main.command()
@app_option
@click.argument("task_id")
@click.option("--wait/--no-wait", default=False)
@click.option("--timeout", type=float, default=None)
def result(app_spec, task_id, wait, timeout) -> None:
    """Print the state and result of a task."""
    app = load_app(app_spec)
    res = app.AsyncResult(task_id)
    if wait:
        _print_result(res, timeout)
        return
    meta = app.backend.get(task_id)
    click.echo(orjson.dumps(meta, default=repr, option=orjson.OPT_INDENT_2).decode())


@main.command()
@app_option
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: celery).")
@click.option("-f", "--force", is_flag=True, help="Don't ask for confirmation.")
def purge(app_spec, queues, force) -> None:
    """Delete every waiting message in the queues."""
    app = load_app(app_spec)
    names = [q for q in (queues or app.conf.task_default_queue).split(",") if q]
    if not force:
        click.confirm(f"Delete all waiting messages in {', '.join(names)} on "
                      f"{mask_url(app.broker_url)}?", abort=True)
    total = sum(app.broker.purge(q) for q in names)
    click.echo(f"purged {total} message(s) from {', '.join(names)}")


@main.command()
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(app_spec, as_json) -> None:
    """Show queues, dead letters and the workers that report health here."""
    app = load_app(app_spec)
    broker = app.broker
    report = {
        "broker": mask_url(app.broker_url),
        "backend": mask_url(app.backend_url) if app.backend_url else None,
        "queues": broker.queue_sizes(),
        "dead_letters": len(broker.dead_letters(limit=10_000)),
        "workers": read_health_files(app.conf.worker_state_dir),
    }
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"broker:  {report['broker']}\nbackend: {report['backend']}")
    click.echo("queues:  " + (", ".join(f"{q}={n}" for q, n in report["queues"].items())
                              or "(empty)"))
    click.echo(f"dead letters: {report['dead_letters']}")
    if not report["workers"]:
        click.echo("workers: none reporting")
    for w in report["workers"]:
        c = w.get("counters", {})
        click.echo(f"worker {w['hostname']} pid={w['pid']} {w['state']} "
                   f"acked={c.get('acked', 0)} queues={','.join(w.get('queues', []))}")
        for child in w.get("children", ()):
            click.echo(f"  child pid={child['pid']} {child['state']} tasks={child['tasks']}")


#: What each command's positional ARGS mean: Celery's argument names, in order; a "*"
#: name takes the rest as a list. Commands missing here take none.
REMOTE_ARGUMENTS = {
    "registered": ["*taskinfoitems"], "query_task": ["*ids"], "conf": ["with_defaults"],
    "revoke": ["*task_id"], "rate_limit": ["task_name", "rate_limit"],
    "time_limit": ["task_name", "soft", "hard"], "pool_grow": ["n"], "pool_shrink": ["n"],
    "autoscale": ["max", "min"], "cancel_consumer": ["queue"], "pool_restart": ["*modules"],
    "add_consumer": ["queue", "exchange", "exchange_type", "routing_key"],
    "revoke_by_stamped_headers": ["*headers"], "memdump": ["samples"],
    "objgraph": ["type", "num", "max_depth"],
}
#: Arguments sent as numbers, as Celery's command line sends them.
NUMBER_ARGUMENTS = frozenset({"n", "max", "min", "samples", "num", "max_depth"})
#: Commands that change a worker; ``fastq inspect`` refuses them, ``fastq control`` sends them.
CONTROL_COMMANDS = ("rate_limit", "time_limit", "revoke", "shutdown", "enable_events",
                    "disable_events", "heartbeat", "ping", "pool_grow", "pool_shrink",
                    "autoscale", "add_consumer", "cancel_consumer", "pool_restart",
                    "revoke_by_stamped_headers")
INSPECT_COMMANDS = ("active", "reserved", "scheduled", "registered", "stats", "revoked",
                    "query_task", "active_queues", "conf", "report", "clock", "ping",
                    "memsample", "memdump", "objgraph")


def _remote_arguments(command: str, values: tuple[str, ...]) -> dict:
    names = REMOTE_ARGUMENTS.get(command, [])
    arguments: dict[str, Any] = {}
    for index, name in enumerate(names):
        if name.startswith("*"):
            arguments[name[1:]] = list(values[index:])
            return arguments
        if index < len(values):
            value: Any = values[index]
            if name in ("soft", "hard"):
                value = float(value)
            elif name in NUMBER_ARGUMENTS:
                if not value.isdigit():
                    raise click.UsageError(f"{command}: {name} must be a number, not {value!r}")
                value = int(value)
            elif name == "with_defaults":
                value = value.lower() in ("1", "true", "yes")
            arguments[name] = value
    if len(values) > len(names):
        raise click.UsageError(f"{command} takes {len(names)} argument(s): "
                               f"{' '.join(n.lstrip('*') for n in names) or 'none'}")
    return arguments


def _remote(app_spec: str | None, command: str, values: tuple[str, ...],
            destination: str | None, timeout: float, as_json: bool) -> None:
    app = load_app(app_spec)
    nodes = [n for n in (destination or "").split(",") if n] or None
    arguments = _remote_arguments(command, values)
    if command == "revoke" and len(arguments.get("task_id", [])) == 1:
        arguments["task_id"] = arguments["task_id"][0]
    wants_reply = command not in ("shutdown",)
    try:
        replies = app.control.broadcast(command, arguments, destination=nodes,
                                        reply=wants_reply, timeout=timeout)
    except FastqError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        app.close()
    if not wants_reply:
        click.echo(f"{command} sent")
        return
    merged: dict = {}
    for answer in replies or ():
        merged.update(answer)
    if as_json:
        click.echo(orjson.dumps(merged, default=repr).decode())
    else:
        for node, answer in sorted(merged.items()):
            failed = isinstance(answer, dict) and "error" in answer
            click.echo(f"-> {node}: {'ERROR' if failed else 'OK'}")
            text = (answer.get("ok") or answer.get("error")) if isinstance(answer, dict) and \
                len(answer) == 1 and isinstance(next(iter(answer.values())), str) else \
                orjson.dumps(answer, default=repr, option=orjson.OPT_INDENT_2).decode()
            click.echo("    " + str(text).replace("\n", "\n    "))
        if merged:
            click.echo(f"\n{len(merged)} node{'s' if len(merged) != 1 else ''} online.")
    if not merged:
        raise click.ClickException("No nodes replied within time constraint")


def _remote_command(kind: str, commands: tuple[str, ...], doc: str):
    @main.command(name=kind, help=doc)
    @app_option
    @click.argument("command", type=click.Choice(commands))
    @click.argument("values", nargs=-1)
    @click.option("-d", "--destination", default=None,
                  help="Comma-separated node names (default: every worker).")
    @click.option("-t", "--timeout", type=float, default=1.0, show_default=True,
                  help="Seconds to wait for replies.")
    @click.option("--json", "as_json", is_flag=True, help="Print the replies as JSON.")
    def remote(app_spec, command, values, destination, timeout, as_json) -> None:
        _remote(app_spec, command, values, destination, timeout, as_json)
    return remote


_remote_command("inspect", INSPECT_COMMANDS,
                "Ask the workers (fastq's or Celery's) about their state: active, reserved, "
                "stats, registered [ITEMS...], query_task IDS..., conf, ...")
_remote_command("control", CONTROL_COMMANDS,
                "Change running workers (fastq's or Celery's): rate_limit TASK RATE, "
                "time_limit TASK SOFT [HARD], revoke IDS..., enable_events, shutdown, ...")


@main.command()
@app_option
@click.option("--dump", "raw", is_flag=True,
              help="Print each event as one line of JSON instead of the live view.")
@click.option("--once", is_flag=True,
              help="Listen for a moment, print one frame of the live view and exit.")
@click.option("--duration", type=float, default=None,
              help="Stop after this many seconds (default: until Ctrl-C).")
def events(app_spec, raw, once, duration) -> None:
    """Watch the workers' events (they need -E): task rates by state and name, and
    workers with the age of their last heartbeat; --dump prints the raw events."""
    from . import monitor

    app = load_app(app_spec)
    deadline = None if duration is None else time.monotonic() + duration
    try:
        receiver = app.broker.event_receiver()
        receiver.open()
    except ConfigurationError as exc:  # a broker without Celery's events: a usage error
        app.close()
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except FastqError as exc:
        app.close()
        raise click.ClickException(str(exc)) from None
    try:
        def until() -> bool:
            return deadline is not None and time.monotonic() >= deadline
        if raw:
            monitor.dump(receiver, sys.stdout, until)
        else:
            monitor.live(receiver, until, once=once)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.close()
        app.close()


@main.command()
@app_option
@click.option("-b", "--broker", "broker_url", default=None, metavar="URL",
              help="Broker whose events to read (default: the App's broker_url).")
@click.option("--port", type=int, default=9808, show_default=True,
              help="Port to serve /metrics on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve /metrics on (0.0.0.0: every interface).")
@click.option("-l", "--loglevel", default="info", show_default=True)
def exporter(app_spec, broker_url, port, host, loglevel) -> None:
    """Serve Prometheus metrics of every worker on the broker (fastq's and Celery's, run
    with -E), made from their events: tasks by name, state and worker, runtimes, workers
    up."""
    import signal

    from .app import App
    from .monitor import exporter as fleet

    logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s: %(levelname)s] %(message)s")
    if broker_url:
        app = App("fastq-exporter")
        app.conf.update(broker_url=broker_url)  # after FASTQ_BROKER_URL: the command line wins
    else:
        app = load_app(app_spec)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    try:
        fleet.serve(app.broker, port=port, host=host, until=lambda: bool(stopping))
    except ConfigurationError as exc:  # no events on this broker, or the port is taken
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
    finally:
        app.close()


def read_health_files(directory: str) -> list[dict]:
    """Health reports of live workers; a stale or dead one is shown as 'unresponsive'."""
    from .worker.supervisor import HEALTH_INTERVAL

    found = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name), "rb") as fh:
                report = orjson.loads(fh.read())
        except (OSError, orjson.JSONDecodeError):
            continue
        alive = _pid_alive(report.get("pid", 0))
        if not alive:
            continue
        if time.time() - report.get("updated_at", 0) > 3 * HEALTH_INTERVAL + 1:
            report["state"] = "unresponsive"
        found.append(report)
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


@main.command()
@app_option
@click.option("--timeout", type=float, default=None,
              help="Seconds the broker and result backend get to answer (default: 3).")
def doctor(app_spec, timeout) -> None:
    """Check the install and the app's broker and backend; exit 1 when something
    configured cannot work."""
    from . import doctor as checks

    if app_spec:
        app = load_app(app_spec)
        title = f"app {app_spec}"
    else:
        app = load_app(None)
        title = "app: default settings and FASTQ_* environment"
    try:
        lines, code = checks.run(app, title, checks.DEFAULT_TIMEOUT if timeout is None
                                 else timeout)
    finally:
        app.close()
    click.echo("\n".join(lines))
    sys.exit(code)


@main.command()
@click.option("-n", "--tasks", "count", type=int, default=20_000, show_default=True)
@click.option("--runs", type=int, default=3, show_default=True)
@click.option("--results/--no-results", default=True, show_default=True,
              help="Store and check every result, or ignore results.")
@click.option("--broker", default=None, help="Broker URL (default: a fresh embedded SQLite).")
@click.option("--prefetch-multiplier", "prefetch", type=int, default=None,
              help="The worker's prefetch per slot (default: its adaptive window).")
def demo(count, runs, results, broker, prefetch) -> None:
    """Publish a batch of tasks, drain them with a worker process, print the figures."""
    from .demo import run_demo

    run_demo(count=count, runs=runs, results=results, broker=broker, prefetch=prefetch)


#: The benchmark programs ``fastq bench`` runs, in this order, as modules of ``bench``.
BENCHMARKS = ("throughput", "latency", "publish")
#: Those it runs only when named with --which (minutes each: they fill queues a million deep).
SLOW_BENCHMARKS = ("depth",)


def _parse_which(ctx, param, value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    known = BENCHMARKS + SLOW_BENCHMARKS
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown benchmark(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(known)}, comma-separated")
    return list(dict.fromkeys(names))


def _import_benchmark(name: str):
    """``bench.<name>``, which lives in the source tree beside ``fastq/``, not in wheels."""
    # the console script's sys.path starts at its own directory, not the caller's
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(f"bench.{name}")
    except ImportError:
        click.echo("fastq bench needs a source checkout: run it from the repository root",
                   err=True)
        sys.exit(2)


@main.command()
@click.option("--which", default=",".join(BENCHMARKS), show_default=True,
              callback=_parse_which, help="Comma-separated benchmarks to run.")
@click.option("-n", "--tasks", "count", type=int, default=None,
              help="Messages per run (default: each benchmark's own).")
@click.option("--runs", type=int, default=None,
              help="Runs of each benchmark (default: each benchmark's own).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw the figures into this image (needs matplotlib).")
def bench(which, count, runs, plot_path) -> None:
    """Run the repository's benchmarks (source checkout only); --which depth adds the queue-depth
    curves of SQLite, Redis and RabbitMQ."""
    if plot_path is not None:
        # fail now rather than after minutes of benchmarking
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            click.echo("--plot needs matplotlib: pip install matplotlib", err=True)
            sys.exit(2)
    modules = {name: _import_benchmark(name) for name in which}
    figures: dict[str, dict] = {}
    for number, name in enumerate(which, 1):
        argv = []
        if count is not None:
            argv += ["-n", str(count)]
        if runs is not None:
            argv += ["--runs", str(runs)]
        click.secho(f"\n[{number}/{len(which)}] {name} {' '.join(argv)}".rstrip(), bold=True)
        began = time.monotonic()
        # the programs set BENCH_* variables for their workers; keep them from leaking
        # into the next program (latency's result backend would slow throughput down)
        saved_env = dict(os.environ)
        try:
            figures[name] = modules[name].main(argv) or {}
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            sys.modules.pop("bench.apps", None)
        click.echo(f"[{number}/{len(which)}] {name} done in {time.monotonic() - began:.1f}s")
    if plot_path is not None:
        _plot(figures, plot_path)
        click.echo(f"figures drawn in {plot_path}")


def _plot(figures: dict[str, dict], path: str) -> None:
    """Bars (median, min-max whiskers) for the rates and a histogram of the round trips."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    panels = [name for name in BENCHMARKS + SLOW_BENCHMARKS if figures.get(name)]
    if not panels:
        raise click.ClickException("no figures to plot")
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 4 * len(panels)), squeeze=False)
    for ax, name in zip((row[0] for row in axes), panels):
        data = figures[name]
        if name == "depth":
            _import_benchmark("depth").draw(ax, data)
            continue
        if name == "latency":
            top = max(sorted(s)[int(0.99 * (len(s) - 1))] for s in data.values())
            for flavour, samples in data.items():
                ax.hist([min(s, top) for s in samples], bins=60, alpha=0.6, label=flavour)
            ax.set(title="round trip, one task at a time (p99 and above in the last bin)",
                   xlabel="µs", ylabel="tasks")
            ax.legend()
            continue
        labels = list(data)
        medians = [statistics.median(data[k]) for k in labels]
        errors = [[m - min(data[k]) for k, m in zip(labels, medians)],
                  [max(data[k]) - m for k, m in zip(labels, medians)]]
        ax.bar(labels, medians, yerr=errors, capsize=4)
        unit = "tasks/s" if name == "throughput" else "msgs/s"
        ax.set(title=f"{name} (median, whiskers: min-max)", ylabel=unit)
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
