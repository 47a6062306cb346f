"""EventSender: events queued by any thread, published in order and in batches by its own
thread; bounded while the broker is away, and nothing lost to one failed publish. The
worker's task events: the executor notes raw facts only while asked (and runs its class's
code otherwise), and the events thread builds Celery's events from them in queue order."""

from __future__ import annotations

import os
import threading
import time
import uuid

import orjson
import pytest

from fastq import App
from fastq.brokers._events import BATCH_SIZE, EventChannel, EventSender
from fastq.exceptions import BrokerConnectionLost, Reject
from fastq.task import Request
from fastq.worker.events import WorkerEvents
from fastq.worker.executor import Executor

pytestmark = pytest.mark.twin_neutral


class RecordingChannel(EventChannel):
    """Keeps what would be published; fails the first ``failures`` publishes."""

    def __init__(self, broker: RecordingBroker, hostname: str) -> None:
        super().__init__(broker, hostname)

    def publish(self, events) -> None:
        broker = self.broker
        if broker.failures:
            broker.failures -= 1
            raise BrokerConnectionLost("broker away")
        broker.published.extend((key, orjson.loads(body)) for key, body in events)


class RecordingBroker:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.published: list[tuple[str, object]] = []
        self.channels = 0

    def event_channel(self, hostname: str) -> RecordingChannel:
        self.channels += 1
        return RecordingChannel(self, hostname)  # type: ignore[arg-type]


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.01)


def test_task_events_go_as_one_list_and_worker_events_alone_in_order() -> None:
    broker = RecordingBroker()
    sender = EventSender(broker, "w@host", flush_interval=0.05)
    sender.start()
    try:
        for n in range(3):
            sender.send("task-received", {"uuid": str(n)})
        sender.send("worker-heartbeat", {"active": 0})
        sender.send("task-succeeded", {"uuid": "2", "result": "5"})
        wait_for(lambda: len(broker.published) == 3)
    finally:
        sender.stop()
    (multi, batch), (beat, heartbeat), (single, succeeded) = broker.published
    assert (multi, beat, single) == ("task.multi", "worker.heartbeat", "task.succeeded")
    assert [e["uuid"] for e in batch] == ["0", "1", "2"]
    assert heartbeat["type"] == "worker-heartbeat" and succeeded["result"] == "5"
    every = [*batch, heartbeat, succeeded]
    assert [e["clock"] for e in every] == [1, 2, 3, 4, 5]
    for event in every:
        assert event["hostname"] == "w@host" and event["pid"] == os.getpid()
        assert isinstance(event["utcoffset"], float) and isinstance(event["timestamp"], float)


def test_a_full_batch_goes_without_waiting_for_the_interval() -> None:
    broker = RecordingBroker()
    sender = EventSender(broker, "w@host", flush_interval=30.0)

    def sent() -> list[dict]:
        return [e for _key, body in broker.published
                for e in (body if isinstance(body, list) else [body])]
    sender.start()
    try:
        for n in range(BATCH_SIZE + 1):
            sender.send("task-started", {"uuid": str(n)})
        # long before the 30 s interval: a full batch wakes the thread
        wait_for(lambda: len(sent()) >= BATCH_SIZE)
    finally:
        sender.stop()
    assert [e["uuid"] for e in sent()] == [str(n) for n in range(BATCH_SIZE + 1)]
    assert max(len(body) for _key, body in broker.published) <= BATCH_SIZE


def test_events_wait_out_a_lost_broker_in_order() -> None:
    broker = RecordingBroker(failures=1)
    sender = EventSender(broker, "w@host", flush_interval=0.01)
    sender.start()
    try:
        sender.send("task-received", {"uuid": "a"})
        wait_for(lambda: broker.failures == 0)  # the first attempt failed
        sender.send("task-started", {"uuid": "a"})
        wait_for(lambda: len(broker.published) == 1)
    finally:
        sender.stop()
    assert [e["type"] for e in broker.published[0][1]] == ["task-received", "task-started"]
    assert broker.channels == 2  # the failed channel was dropped for a new one


def test_the_queue_is_bounded_while_nothing_publishes() -> None:
    sender = EventSender(RecordingBroker(), "w@host", max_pending=BATCH_SIZE + 5)
    for n in range(BATCH_SIZE + 8):
        sender.send("task-received", {"uuid": str(n)})
    assert len(sender.pending) == BATCH_SIZE + 5 and sender.dropped == 3
    assert sender.pending[0][2]["uuid"] == "3"  # the oldest went


def test_stop_publishes_what_is_queued_and_ticks_run_on_the_thread() -> None:
    broker = RecordingBroker()
    ticks: list[str] = []

    def tick() -> None:
        ticks.append(threading.current_thread().name)
        sender.send("worker-heartbeat", {})

    sender = EventSender(broker, "w@host", flush_interval=60.0, tick=tick, tick_interval=60.0)
    sender.start()
    wait_for(lambda: broker.published)  # the first tick, at start
    sender.send("task-received", {"uuid": "x"})
    sender.stop()
    assert ticks == ["fastq-events"]
    assert [key for key, _body in broker.published] == ["worker.heartbeat", "task.received"]


@pytest.fixture
def app():
    app = App("facts", broker=f"memory://{uuid.uuid4()}", backend=f"memory://{uuid.uuid4()}")

    @app.task(name="f.add")
    def add(x, y):
        return [x + y]

    @app.task(name="f.refuse")
    def refuse():
        raise Reject("no", requeue=True)

    @app.task(name="f.boom")
    def boom():
        raise ValueError("boom")

    yield app
    app.close()


def run(app: App, executor: Executor, name: str, *args) -> str:
    task_id = str(uuid.uuid4())
    request = Request({"id": task_id, "task": name, "argsrepr": repr(args),
                       "kwargsrepr": "{}"}, list(args), {}, None)
    executor.run(app.tasks[name], request)
    return task_id


def test_transitions_are_noted_as_raw_facts_only_while_asked(app) -> None:
    executor = Executor(app, "w@host")
    facts: list[tuple] = []
    run(app, executor, "f.add", 1, 2)
    executor.note_transitions(facts.append)
    added = run(app, executor, "f.add", 2, 3)
    refused = run(app, executor, "f.refuse")
    failed = run(app, executor, "f.boom")
    executor.stop_noting()
    run(app, executor, "f.add", 3, 4)

    assert [fact[0] for fact in facts] == ["started", "succeeded", "started", "rejected",
                                           "started"]
    (_, started_at, started_id), (_, done_at, done_id, result, runtime) = facts[:2]
    assert started_id == done_id == added and started_at <= done_at <= time.time()
    assert result == "[5]" and isinstance(runtime, float) and runtime >= 0.0
    assert facts[3][2:] == (refused, True)
    assert facts[4][2] == failed  # its task-failed event comes from the task_failure signal
    assert executor.started_at == {}
    # off again: the class's own methods, nothing on the instance
    assert not {"_begin", "_succeeded", "_failed"} & set(vars(executor))


def test_worker_events_turn_facts_into_celerys_events_on_the_thread(app) -> None:
    executor = Executor(app, "w@host")
    broker = RecordingBroker()
    events = WorkerEvents(broker, "w@host", lambda: (0, 0), heartbeat=0.0,  # type: ignore[arg-type]
                          executor=executor, task_events=True)
    events.sender.flush_interval = 0.01
    events.start()
    try:
        added = run(app, executor, "f.add", 2, 3)
        failed = run(app, executor, "f.boom")
        wait_for(lambda: sum(len(body) if isinstance(body, list) else 1
                             for _key, body in broker.published) >= 4)
    finally:
        events.stop()
    sent = [event for _key, body in broker.published
            for event in (body if isinstance(body, list) else [body])]
    assert [(e["type"], e["uuid"]) for e in sent] == [
        ("task-started", added), ("task-succeeded", added),
        ("task-started", failed), ("task-failed", failed)]
    assert [e["clock"] for e in sent] == [1, 2, 3, 4]
    assert sent[1]["result"] == "[5]" and "ValueError" in sent[3]["traceback"]
    assert not events.task_events and "_begin" not in vars(executor)


def test_recorded_facts_need_no_wake_up_while_polling() -> None:
    broker = RecordingBroker()
    sender = EventSender(broker, "w@host", flush_interval=0.01,
                         builders={"started": lambda entry, clock: {
                             "type": "task-started", "uuid": entry[2], "clock": clock,
                             "timestamp": entry[1]}})
    sender.polling = True
    sender.start()
    try:
        time.sleep(0.05)  # the thread is asleep on its polling timeout, not on an event
        sender.record(("started", 1.5, "a"))
        sender.send("task-revoked", {"uuid": "a"})
        sender.record(("started", 2.5, "b"))
        wait_for(lambda: broker.published)
    finally:
        sender.stop()
    (key, body), = broker.published
    assert key == "task.multi"
    assert [(e["type"], e["uuid"], e["clock"]) for e in body] == [
        ("task-started", "a", 1), ("task-revoked", "a", 2), ("task-started", "b", 3)]
    assert body[0]["timestamp"] == 1.5
    orjson.dumps(body)


def test_a_consumer_that_notes_receipts_replaces_the_task_received_signal(app) -> None:
    from fastq import signals

    executor = Executor(app, "w@host")
    executor.consumer_notes_receipts = True
    broker = RecordingBroker()
    events = WorkerEvents(broker, "w@host", lambda: (0, 0), heartbeat=0.0,  # type: ignore[arg-type]
                          executor=executor, task_events=True)
    events.sender.flush_interval = 0.01
    listening = {key for key, _held in signals.task_received.receivers}
    assert (id(events), "_on_received") not in {key[0] for key in listening}
    request = Request({"id": "r-1", "task": "f.add", "argsrepr": "(2, 3)",
                       "kwargsrepr": "{}", "retries": 0}, [2, 3], {}, None)
    events.start()
    try:
        executor.record_transition(("received", 12.5, request))  # type: ignore[misc]
        wait_for(lambda: broker.published)
    finally:
        events.stop()
    (key, received), = broker.published
    assert key == "task.received" and received["timestamp"] == 12.5
    assert (received["uuid"], received["name"], received["args"]) == ("r-1", "f.add", "(2, 3)")
    assert events.totals == {"f.add": 1}


def test_heartbeat_sent_goes_before_each_worker_event_with_its_sender() -> None:
    from fastq import signals

    seen: list[tuple[object, int]] = []
    broker = RecordingBroker()

    def on_heartbeat(sender=None, **kwargs) -> None:
        # the event it comes before is not published yet
        seen.append((sender, len(broker.published)))

    events = WorkerEvents(broker, "w@host", lambda: (0, 0), heartbeat=0.02,  # type: ignore[arg-type]
                          task_events=True)
    signals.heartbeat_sent.connect(on_heartbeat)
    events.start()
    try:
        wait_for(lambda: len(broker.published) >= 3)  # online and two heartbeats
    finally:
        signals.heartbeat_sent.disconnect(on_heartbeat)
        events.stop()
    kinds = [body["type"] for _key, body in broker.published]
    assert kinds[0] == "worker-online" and "worker-heartbeat" in kinds[1:]
    assert kinds[-1] == "worker-offline"  # sent after the receiver went: not signalled
    assert len(seen) >= 3 and all(sender is events for sender, _ in seen)
    assert [published for _, published in seen[:3]] == [0, 1, 2]
