"""The fastq command: worker, call, result, purge, status, demo, bench."""

from __future__ import annotations

if __name__ == "__main__":  # python -m fastq.cli: patch for a green pool before other imports
    from fastq._green import patch_for_command_line

    patch_for_command_line()

import importlib
import os
import sys
import time
import traceback
from typing import Any

import click
import orjson

from .app import App
from .brokers import mask_url
from .exceptions import ConfigurationError, FastqError


class AppLoadError(click.ClickException):
    """The -A target could not be imported or holds no App."""


def load_app(spec: str | None) -> App:
    """Find the App named by ``-A``: ``pkg.module``, ``pkg.module:attr``, or a package
    whose ``celery``/``app`` submodule or attribute holds the App (Celery's lookup)."""
    if not spec:
        from .app import current_app

        return current_app()
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    module = _import_user_module(module_name)
    if attr:
        found: Any = module
        for part in attr.split("."):
            found = getattr(found, part, None)
            if found is None:
                raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}")
        if callable(found) and not isinstance(found, App):
            found = found()
        if not isinstance(found, App):
            raise AppLoadError(f"{spec!r} is a {type(found).__name__}, not a fastq App")
        return found
    for name in ("app", "celery"):
        candidate = getattr(module, name, None)
        if isinstance(candidate, App):
            return candidate
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) == 1:
        return apps[0]
    for sub in ("celery", "app"):
        try:
            submodule = importlib.import_module(f"{module_name}.{sub}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{module_name}.{sub}":
                raise
            continue
        for name in ("app", "celery"):
            candidate = getattr(submodule, name, None)
            if isinstance(candidate, App):
                return candidate
    if len(apps) > 1:
        raise AppLoadError(f"module {module_name!r} holds several Apps; name one with "
                           f"-A {module_name}:NAME")
    raise AppLoadError(f"no fastq App found in module {module_name!r}; name it with "
                       f"-A {module_name}:NAME")


def _import_user_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise AppLoadError(f"cannot import {name!r}: no module named {exc.name!r} "
                               f"(searched from {os.getcwd()})") from None
        _raise_user_error(name)
    except Exception:
        _raise_user_error(name)


def _raise_user_error(name: str):
    # Show the user's own frames, not fastq's or importlib's.
    exc_type, exc, tb = sys.exc_info()
    frames = [f for f in traceback.extract_tb(tb)
              if "importlib" not in f.filename and os.sep + "fastq" + os.sep not in f.filename]
    text = "".join(traceback.format_list(frames)) + "".join(
        traceback.format_exception_only(exc_type, exc))
    raise AppLoadError(f"error while importing {name!r}:\nTraceback (most recent call last):\n"
                       f"{text.rstrip()}")


app_option = click.option("-A", "--app", "app_spec", envvar="FASTQ_APP",
                          help="Module holding the App: pkg.module or pkg.module:attr.")


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fastq")
def main() -> None:
    """fastq: a fast task queue that speaks Celery's protocol."""


@main.command()
@app_option
@click.option("-P", "--pool", default=None,
              help="Pool: solo (default), prefork (-c child processes).")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume.")
@click.option("-c", "--concurrency", type=int, default=None, help="Tasks run at once.")
@click.option("-l", "--loglevel", default="warning", show_default=True)
@click.option("--prefetch-multiplier", type=int, default=None,
              help="Messages claimed ahead per slot (0: one at a time).")
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
def worker(app_spec, pool, queues, concurrency, loglevel, prefetch_multiplier, hostname,
           health_file, start_method, max_tasks_per_child, max_memory_per_child,
           autoscale) -> None:
    """Run a worker that executes tasks."""
    from .worker.supervisor import Worker, setup_logging

    try:
        setup_logging(loglevel)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--loglevel") from None
    scale = None
    if autoscale is not None:
        from .worker.pools.prefork import parse_autoscale

        try:
            scale = parse_autoscale(autoscale)
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint="--autoscale") from None
        pool = pool or "prefork"
    app = load_app(app_spec)
    if hostname:
        import socket

        hostname = hostname.replace("%h", socket.gethostname())
    try:
        w = Worker(app, queues=[q for q in (queues or "").split(",") if q] or None, pool=pool,
                   concurrency=concurrency, prefetch_multiplier=prefetch_multiplier,
                   hostname=hostname, health_file=health_file, app_spec=app_spec,
                   start_method=start_method, max_tasks_per_child=max_tasks_per_child,
                   max_memory_per_child=max_memory_per_child, autoscale=scale)
    except FastqError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(w.run())


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
@click.option("-n", "--tasks", "count", type=int, default=20_000, show_default=True)
@click.option("--runs", type=int, default=3, show_default=True)
@click.option("--results/--no-results", default=True, show_default=True,
              help="Store and check every result, or ignore results.")
@click.option("--broker", default=None, help="Broker URL (default: a fresh embedded SQLite).")
@click.option("--prefetch-multiplier", "prefetch", type=int, default=64, show_default=True,
              help="The worker's prefetch: a throughput job takes big batches (the "
                   "worker default is 4, fair to long tasks).")
def demo(count, runs, results, broker, prefetch) -> None:
    """Publish a batch of tasks, drain them with a worker process, print the figures."""
    from .demo import run_demo

    run_demo(count=count, runs=runs, results=results, broker=broker, prefetch=prefetch)


#: The benchmark programs ``fastq bench`` runs, in this order, as modules of ``bench``.
BENCHMARKS = ("throughput", "latency", "publish")


def _parse_which(ctx, param, value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown benchmark(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(BENCHMARKS)}, comma-separated")
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
    """Run the repository's benchmarks against RabbitMQ (source checkout only)."""
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

    panels = [name for name in BENCHMARKS if figures.get(name)]
    if not panels:
        raise click.ClickException("no figures to plot")
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 4 * len(panels)), squeeze=False)
    for ax, name in zip((row[0] for row in axes), panels):
        data = figures[name]
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
