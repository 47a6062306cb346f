"""The beat's decisions on a fake clock, with the in-process store: each run claimed
once, a dead claimant's run taken over after its lease, one catch-up after downtime,
Celery's ``add_periodic_task`` and hooks, the dry run."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
import types
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from fastq._beat_store import MemoryStore, SQLStore
from fastq.app import App
from fastq.beat import RUN_HEADER, Beat, Entry, run_task_id
from fastq.exceptions import PublishTimeout
from fastq.schedules import crontab

T0 = 1_800_000_000.0  # a fixed "now" for the fake clock


def _app(**schedule) -> App:
    return App(broker="memory://", beat_schedule=schedule)


def _sent(app: App) -> list[tuple[str, str]]:
    """(run header, task id) of every message the beat published so far."""
    out = []
    for delivery in app.broker.fetch(["celery"], 10_000, 0):
        out.append((delivery.headers[RUN_HEADER], delivery.headers["id"]))
    return out


@pytest.fixture(params=["memory", "sqlite"])
def store_factory(request, tmp_path):
    if request.param == "memory":
        shared = MemoryStore()
        return lambda: shared
    path = str(tmp_path / "beat.sqlite3")
    return lambda: SQLStore(path=path)


def test_two_beats_on_one_store_send_each_run_once(store_factory):
    app = _app(tick={"task": "t.tick", "schedule": 1.0},
               minute={"task": "t.minute", "schedule": crontab()})
    beats = [Beat(app, max_interval=5, store=store_factory()) for _ in range(2)]
    for step in range(0, 250):  # 125 s of fake time, both beats ticking every 0.5 s
        for beat in beats:
            beat.tick(T0 + step * 0.5)
    sent = _sent(app)
    runs = [header for header, _ in sent]
    assert len(runs) == len(set(runs))  # no run twice
    assert len({task_id for _, task_id in sent}) == len(sent)
    ticks = sorted(h for h in runs if h.startswith("tick@"))
    assert len(ticks) == 124  # T0+1 .. T0+124
    minutes = [h for h in runs if h.startswith("minute@")]
    assert len(minutes) == 2  # two minute boundaries in 125 s from T0 (…:20)
    assert sum(b.sent for b in beats) == len(sent)


def test_a_claim_left_unsent_is_taken_over_after_its_lease():
    app = _app(tick={"task": "t.tick", "schedule": 10.0})
    store = MemoryStore()
    beat = Beat(app, max_interval=5, store=store)
    beat.tick(T0)
    due = round((T0 + 10) * 1e6)
    # a beat that claimed the run and died before publishing
    assert store.claim([("tick", due)], "dead-beat", lease=0.5) == {("tick", due)}
    beat.tick(T0 + 10.1)
    assert _sent(app) == []  # the lease is live: not ours
    import time
    time.sleep(0.6)  # the store's lease clock is real time
    beat.tick(T0 + 10.8)
    [(header, task_id)] = _sent(app)
    assert task_id == run_task_id("tick", due)  # the id the dead claimant would have used


def test_downtime_gives_one_catch_up_then_the_schedule_goes_on(store_factory):
    app = _app(tick={"task": "t.tick", "schedule": 1.0})
    beat = Beat(app, max_interval=5, store=store_factory())
    for step in range(7):
        beat.tick(T0 + step * 0.5)  # runs due at T0+1, T0+2, T0+3
    assert len(_sent(app)) == 3
    restarted = Beat(app, max_interval=5, store=store_factory())
    restarted.tick(T0 + 13.25)  # ten seconds later
    restarted.tick(T0 + 13.5)
    assert len(_sent(app)) == 1  # one catch-up, not ten
    for step in range(1, 5):
        restarted.tick(T0 + 13.25 + step * 0.5)  # then every second, counted from the catch-up
    assert len(_sent(app)) == 2


def test_add_periodic_task_from_the_hooks_and_entry_options():
    app = _app()

    @app.task(name="t.hello")
    def hello(who):
        return who

    @app.on_after_configure.connect
    def configure(sender, **kwargs):
        sender.add_periodic_task(2.0, hello.s("world"), name="hello every 2",
                                 queue="celery", expires=30)

    @app.on_after_finalize.connect
    def finalize(sender, **kwargs):
        sender.add_periodic_task(crontab(minute=0), hello.s("noon"))

    beat = Beat(app, max_interval=5, store=MemoryStore())
    beat.tick(T0)
    assert set(beat.entries) == {"hello every 2", "t.hello('noon')"}
    beat.tick(T0 + 2)
    [(header, _)] = _sent(app)
    assert header.startswith("hello every 2@")


def test_database_entries_are_picked_up_paused_and_removed():
    app = _app()
    store = MemoryStore()
    beat = Beat(app, max_interval=1, store=store)
    beat.tick(T0)
    assert beat.entries == {}
    store.put_entry("db", {"task": "t.db", "schedule": {"every": 1.0}, "args": [1]})
    beat.tick(T0 + 1)  # a refresh: max_interval passed
    assert set(beat.entries) == {"db"}
    beat.tick(T0 + 2.5)
    assert len(_sent(app)) == 1
    store.set_enabled("db", False)
    beat.tick(T0 + 3.6)
    beat.tick(T0 + 4.7)
    assert beat.entries == {} and _sent(app) == []
    store.set_enabled("db", True)
    assert store.remove_entry("db") and not store.remove_entry("db")


def test_dry_run_lists_the_next_runs_in_order():
    app = _app(a={"task": "t.a", "schedule": crontab(minute=0, hour="*/6")},
               b={"task": "t.b", "schedule": timedelta(hours=8)})
    beat = Beat(app, store=MemoryStore())
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    runs = list(beat.upcoming(start + timedelta(days=1), start=start))
    assert [(at.hour, entry.name) for at, entry in runs] == [
        (6, "a"), (8, "b"), (12, "a"), (16, "b"), (18, "a"), (0, "a"), (0, "b")]


def test_the_wait_after_a_send_counts_the_next_run_of_what_was_sent():
    app = _app(tick={"task": "t.tick", "schedule": 1.0})
    beat = Beat(app, max_interval=5, store=MemoryStore())
    assert beat.tick(T0) == pytest.approx(1.0)
    assert beat.tick(T0 + 1.0) == pytest.approx(1.0)  # sent; the next is a second away


@pytest.mark.parametrize("outcome", ["sent", "failed"])
def test_a_publish_slower_than_the_lease_keeps_its_claim(store_factory, outcome):
    # a publish to an unreachable broker retries for broker_connection_timeout (4 s), far
    # past the claim's lease (here 0.3 s): the claim must hold while it runs, or a second
    # beat sends the run too; once it failed, the claim lapses and the run goes elsewhere
    app = App(broker=f"memory://slow-{uuid.uuid4().hex}", beat_claim_lease=0.3,
              beat_schedule={"tick": {"task": "t.tick", "schedule": 10.0}})
    slow, other = (Beat(app, max_interval=5, store=store_factory()) for _ in range(2))
    slow.tick(T0)
    other.tick(T0)
    publishing = threading.Event()
    publish = app.publish_many

    def slow_publish(messages, **options):
        if threading.current_thread().name == "slow-beat":
            publishing.set()
            time.sleep(1.2)  # four leases
            if outcome == "failed":
                raise PublishTimeout("broker unreachable for 1.2 s")
        publish(messages, **options)
    app.publish_many = slow_publish  # type: ignore[method-assign]
    errors = []

    def tick_slowly():
        try:
            slow.tick(T0 + 10.1)
        except PublishTimeout as exc:
            errors.append(exc)
    thread = threading.Thread(target=tick_slowly, name="slow-beat")
    thread.start()
    assert publishing.wait(5)
    while thread.is_alive():
        other.tick(T0 + 10.1)
        time.sleep(0.05)
    thread.join()
    assert other.sent == 0  # not while the slow beat was publishing
    assert len(errors) == (outcome == "failed")
    deadline = time.monotonic() + 2
    while outcome == "failed" and not other.sent and time.monotonic() < deadline:
        other.tick(T0 + 10.2)  # the failed claim lapses one lease after the publish
        time.sleep(0.05)
    [(_, task_id)] = _sent(app)
    assert task_id == run_task_id("tick", round((T0 + 10) * 1e6))
    assert (slow.sent, other.sent) == ((1, 0) if outcome == "sent" else (0, 1))


class RedBeatScheduler:
    """A Celery scheduler class fastq does not have (redbeat's, say)."""


def test_worker_dash_b_stops_on_an_unknown_beat_scheduler(monkeypatch):
    from click.testing import CliRunner

    from fastq import cli
    from fastq.worker.supervisor import Worker

    app = App("dash-b", broker=f"memory://{uuid.uuid4().hex}",
              beat_scheduler=RedBeatScheduler)
    module = types.ModuleType("dash_b_app")
    module.app = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dash_b_app", module)
    ran = []
    monkeypatch.setattr(Worker, "run", lambda self: ran.append(self) or 0)
    done = CliRunner().invoke(cli.main, ["worker", "-A", "dash_b_app:app", "-B"])
    assert done.exit_code == 1 and not ran, done.output
    [line] = done.output.splitlines()  # one line, no traceback
    assert "unknown scheduler" in line and "test_beat:RedBeatScheduler" in line
    assert "beat_scheduler" in line
    # without -B the setting means nothing to a worker
    done = CliRunner().invoke(cli.main, ["worker", "-A", "dash_b_app:app"])
    assert done.exit_code == 0 and len(ran) == 1, done.output


def test_worker_dash_b_runs_the_beat_scheduler_setting(monkeypatch):
    from fastq import signals
    from fastq.contrib.django import beat as django_beat
    from fastq.schedules import schedule
    from fastq.worker.supervisor import Worker

    class TablesStandIn:
        """Stands in for django-celery-beat's tables."""

        def entries(self, app):
            return {"from-tables": Entry("from-tables", "t.tables", schedule(7200.0, app=app))}

        def sent(self, runs):
            pass

    monkeypatch.setattr(django_beat, "DjangoBeatSource", TablesStandIn)
    app = App("dash-b", broker=f"memory://{uuid.uuid4().hex}", beat_scheduler="django")
    started = []

    def embedded(sender, **kwargs):
        started.append(sender)
    signals.beat_embedded_init.connect(embedded)
    worker = Worker(app, beat=True)
    try:
        worker.start_beat()
    finally:
        worker.stop_beat()
        signals.beat_embedded_init.disconnect(embedded)
    [beat] = started
    assert [type(source) for source in beat.sources] == [TablesStandIn]
    assert "from-tables" in beat.load_entries()


def test_the_leaders_state_file_is_private(tmp_path):
    # the AMQP-only leader saves its state (entries and their arguments) in a file: 0600,
    # as the other state files, even over a temp file left behind with another mode
    path = tmp_path / ".fastq" / "beat-state.json"
    path.parent.mkdir()
    (tmp_path / ".fastq" / "beat-state.json.tmp").write_text("{}")
    os.chmod(path.parent / "beat-state.json.tmp", 0o644)
    old_umask = os.umask(0o022)
    try:
        store = MemoryStore(str(path))
        store.put_entry("db", {"task": "t.db", "schedule": {"every": 1.0}, "args": [1]})
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert MemoryStore(str(path)).entries()["db"]["args"] == [1]


def test_the_schedulers_beat_knows_are_those_of_the_django_plug_in():
    from fastq.beat import SCHEDULERS
    from fastq.contrib.django.beat import SCHEDULER_NAMES

    assert set(SCHEDULERS) == SCHEDULER_NAMES
