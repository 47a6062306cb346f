"""Contract test suites that every broker, result backend and worker pool must pass (pytest)."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ..app import App
from ..backends import Backend, create_backend
from ..backends.base import exception_from_dict
from ..brokers import Broker, Delivery, create_broker
from ..exceptions import ResultTimeout
from ..execution import ACK
from ..limits import TERMINATE_SIGNAL
from ..protocol import Message
from ..result import AsyncResult, GroupResult
from ..task import Request, Task
from ..worker.executor import Executor
from ..worker.pools.base import RELEASE, Completion, Pool

#: The body of every test message: Celery's ``[args, kwargs, embed]`` with nothing in it.
BODY = b"[[],{},{}]"


def make_message(queue: str = "celery", priority: int = 0, not_before: float = 0.0,
                 task_id: str | None = None, body: bytes = BODY, **headers: Any) -> Message:
    """A minimal task-shaped message; extra keyword arguments become headers."""
    return Message(
        headers={"id": task_id or str(uuid.uuid4()), "task": "contract.task", **headers},
        properties={"content_type": "application/json", "content_encoding": "utf-8",
                    "priority": priority},
        body=body, queue=queue, not_before=not_before)


def _ids(deliveries: list[Delivery]) -> list[str]:
    return [d.headers["id"] for d in deliveries]


class BrokerContract:
    """The behaviour every ``Broker`` promises, as tests to inherit.

    Subclass it in a test module and supply a ``broker_url`` fixture giving the URL of the
    broker under test. The queues the tests use are named by ``queue_name``, unique to
    each test, so a server shared with other test runs does no harm; a subclass removes
    afterwards whatever its server keeps::

        class TestMyBroker(BrokerContract):
            @pytest.fixture
            def broker_url(self, tmp_path):
                return f"mybroker://{tmp_path}/q"

    Brokers are built with ``fastq.brokers.create_broker(broker_url)``; override
    ``make_broker`` to build them differently. Every broker made is closed after the
    test. Tests of optional behaviour skip unless the broker lists the capability
    (``priority``, ``delay``, ``dead_letter``).

    ``bulk_messages`` and ``concurrent_messages`` size the volume tests; a subclass may
    lower them for a server that is slow in tests only (saying why). A broker whose
    server promises at-least-once delivery only, where two receives at the same moment
    may both get one message (SQS standard queues), sets ``concurrent_copies = True``.
    """

    bulk_messages = 1000
    concurrent_messages = 400
    #: Whether two consumers receiving at the same moment may both be handed one
    #: message. The concurrency test then accepts such copies (a few in a hundred at
    #: most, each to a different consumer) and still demands every message delivered.
    concurrent_copies = False

    @pytest.fixture(autouse=True)
    def _broker_contract_setup(self, broker_url: str) -> Iterator[None]:
        self.broker_url = broker_url
        self._made_brokers: list[Broker] = []
        self._queue_suffix = uuid.uuid4().hex[:8]
        yield
        for broker in self._made_brokers:
            broker.close()

    def queue_name(self, name: str) -> str:
        """``name`` made unique to this test: two suites sharing one server (two
        checkouts tested at once, say) never see each other's queues."""
        return f"{name}-{self._queue_suffix}"

    def make_broker(self, **options: Any) -> Broker:
        """A new broker instance on the test's URL, seeing the same queues as the others."""
        broker = create_broker(self.broker_url, **options)
        self._made_brokers.append(broker)
        return broker

    @pytest.fixture
    def broker(self) -> Broker:
        return self.make_broker()

    def require(self, broker: Broker, capability: str) -> None:
        if capability not in broker.capabilities:
            pytest.skip(f"{type(broker).__name__} lacks the {capability!r} capability")

    def drain(self, broker: Broker, queues: list[str], limit: int = 100,
              timeout: float = 0.2) -> list[Delivery]:
        """Fetch until a fetch comes back empty; nothing is acked."""
        got: list[Delivery] = []
        while True:
            batch = broker.fetch(queues, limit, timeout)
            if not batch:
                return got
            got.extend(batch)

    # -- producing and consuming -----------------------------------------------------
    def test_publish_fetch_roundtrip(self, broker: Broker) -> None:
        queue = self.queue_name("roundtrip")
        body = b"\x00\xff\xfe binary \xc3\xa9 payload"
        message = make_message(queue, body=body, argsrepr="(1, 'é')",
                               timelimit=[None, 10], nested={"a": [1, 2.5, True, None]})
        sent_headers = dict(message.headers)
        sent_properties = dict(message.properties)
        broker.publish(message)
        [delivery] = broker.fetch([queue], 10, 5)
        assert {k: delivery.headers.get(k) for k in sent_headers} == sent_headers
        assert {k: delivery.properties.get(k) for k in sent_properties} == sent_properties
        assert delivery.body == body and isinstance(delivery.body, bytes)
        assert delivery.queue == queue
        assert delivery.redeliveries == 0
        broker.ack_many([delivery.tag])

    def test_instances_share_queues(self) -> None:
        queue = self.queue_name("shared")
        producer, consumer = self.make_broker(), self.make_broker()
        message = make_message(queue)
        producer.publish_many([message])
        [delivery] = consumer.fetch([queue], 10, 5)
        assert delivery.headers["id"] == message.headers["id"]
        consumer.ack_many([delivery.tag])

    def test_published_headers_are_not_shared_with_the_producer(self, broker: Broker) -> None:
        queue = self.queue_name("copied")
        message = make_message(queue)
        task_id = message.headers["id"]
        broker.publish(message)
        message.headers["id"] = "changed after publish"
        message.properties["priority"] = 9
        [delivery] = broker.fetch([queue], 10, 5)
        assert delivery.headers["id"] == task_id
        assert delivery.properties["priority"] == 0

    def test_fifo_within_a_priority(self, broker: Broker) -> None:
        queue = self.queue_name("fifo")
        messages = [make_message(queue) for _ in range(20)]
        broker.publish_many(messages[:10])
        for message in messages[10:]:
            broker.publish(message)
        got = self.drain(broker, [queue], limit=3)
        assert _ids(got) == [m.headers["id"] for m in messages]

    def test_higher_priority_first(self, broker: Broker) -> None:
        self.require(broker, "priority")
        queue = self.queue_name("prio")
        messages = [make_message(queue, priority=p) for p in (0, 5, 1, 9, 5, 0)]
        broker.publish_many(messages)
        got = self.drain(broker, [queue])
        expected = sorted(messages, key=lambda m: -m.priority)  # stable: FIFO within a level
        assert _ids(got) == [m.headers["id"] for m in expected]

    def test_fetch_respects_limit(self, broker: Broker) -> None:
        queue = self.queue_name("limit")
        broker.publish_many([make_message(queue) for _ in range(7)])
        batches = []
        while batch := broker.fetch([queue], 3, 0.2 if batches else 5):
            batches.append(batch)
        assert all(1 <= len(batch) <= 3 for batch in batches)
        assert sum(len(batch) for batch in batches) == 7

    def test_fetch_times_out_empty(self, broker: Broker) -> None:
        queue = self.queue_name("nothing-here")
        timeout = 0.3
        started = time.monotonic()
        assert broker.fetch([queue], 10, timeout) == []
        elapsed = time.monotonic() - started
        assert 0 <= elapsed < timeout + 1

    def test_fetch_from_several_queues(self, broker: Broker) -> None:
        queue_a = self.queue_name("multi-a")
        queue_b = self.queue_name("multi-b")
        a, b = make_message(queue_a), make_message(queue_b)
        broker.publish_many([a, b])
        got = self.drain(broker, [queue_a, queue_b])
        assert sorted(_ids(got)) == sorted([a.headers["id"], b.headers["id"]])
        assert {d.headers["id"]: d.queue for d in got} == {
            a.headers["id"]: queue_a, b.headers["id"]: queue_b}

    def test_named_queues_are_isolated(self, broker: Broker) -> None:
        queue_a = self.queue_name("iso-a")
        queue_b = self.queue_name("iso-b")
        broker.publish(make_message(queue_a))
        assert broker.fetch([queue_b], 10, 0.2) == []
        assert len(broker.fetch([queue_a], 10, 5)) == 1

    # -- claiming and settling -------------------------------------------------------
    def test_claimed_messages_are_invisible(self, broker: Broker) -> None:
        queue = self.queue_name("claimed")
        broker.publish(make_message(queue))
        other = self.make_broker()
        [delivery] = broker.fetch([queue], 10, 5)
        assert other.fetch([queue], 10, 0.2) == []
        assert broker.fetch([queue], 10, 0.2) == []
        broker.ack_many([delivery.tag])

    def test_ack_removes(self, broker: Broker) -> None:
        queue = self.queue_name("ack")
        broker.publish_many([make_message(queue) for _ in range(3)])
        got = self.drain(broker, [queue])
        broker.ack_many([d.tag for d in got])
        broker.release_many([d.tag for d in got])  # already acked: nothing comes back
        assert broker.fetch([queue], 10, 0.2) == []

    def test_ack_many_ignores_unknown_tags(self, broker: Broker) -> None:
        queue = self.queue_name("unknown")
        broker.publish(make_message(queue))
        [delivery] = broker.fetch([queue], 10, 5)
        broker.ack_many([delivery.tag])
        broker.ack_many([delivery.tag])  # twice
        broker.ack_many([])
        broker.release_many([delivery.tag])
        assert broker.fetch([queue], 10, 0.2) == []

    def test_release_does_not_count_a_delivery(self, broker: Broker) -> None:
        queue = self.queue_name("release")
        message = make_message(queue)
        broker.publish(message)
        [delivery] = broker.fetch([queue], 10, 5)
        broker.release_many([delivery.tag])
        [again] = broker.fetch([queue], 10, 5)
        assert again.headers["id"] == message.headers["id"]
        assert again.redeliveries == delivery.redeliveries == 0
        broker.ack_many([again.tag])

    def test_reject_requeue_counts_a_redelivery(self, broker: Broker) -> None:
        queue = self.queue_name("requeue")
        message = make_message(queue)
        broker.publish(message)
        [delivery] = broker.fetch([queue], 10, 5)
        broker.reject(delivery.tag, requeue=True)
        [again] = broker.fetch([queue], 10, 5)
        assert again.headers["id"] == message.headers["id"]
        assert again.redeliveries == 1
        broker.reject(again.tag, requeue=True)
        [third] = broker.fetch([queue], 10, 5)
        assert third.redeliveries == 2
        broker.ack_many([third.tag])

    def test_reject_without_requeue_dead_letters(self, broker: Broker) -> None:
        self.require(broker, "dead_letter")
        queue = self.queue_name("rejected")
        message = make_message(queue)
        broker.publish(message)
        [delivery] = broker.fetch([queue], 10, 5)
        broker.reject(delivery.tag, requeue=False)
        assert broker.fetch([queue], 10, 0.2) == []
        [record] = broker.dead_letters(queue=queue)
        assert record["reason"] == "rejected"
        assert record["queue"] == queue
        assert record["headers"]["id"] == message.headers["id"]

    def test_dead_letter_records_reason_and_headers(self, broker: Broker) -> None:
        self.require(broker, "dead_letter")
        queue = self.queue_name("dead")
        missing = self.queue_name("no-such-queue")
        first, second = make_message(queue), make_message(queue)
        broker.publish_many([first, second])
        got = self.drain(broker, [queue])
        by_id = {d.headers["id"]: d for d in got}
        broker.dead_letter(by_id[first.headers["id"]].tag, "decode-error: bad body")
        broker.dead_letter(by_id[second.headers["id"]].tag, "unknown-task: contract.task")
        assert broker.fetch([queue], 10, 0.2) == []
        records = broker.dead_letters(queue=queue)
        assert [r["headers"]["id"] for r in records] == [second.headers["id"],
                                                         first.headers["id"]]  # newest first
        assert [r["reason"] for r in records] == ["unknown-task: contract.task",
                                                  "decode-error: bad body"]
        assert all(r["queue"] == queue for r in records)
        assert broker.dead_letters(queue=queue, limit=1)[0]["headers"]["id"] == \
            second.headers["id"]
        assert broker.dead_letters(queue=missing) == []

    # -- timing ----------------------------------------------------------------------
    def test_not_before_holds_a_message_until_due(self, broker: Broker) -> None:
        self.require(broker, "delay")
        queue = self.queue_name("delayed")
        due = time.time() + 0.5
        message = make_message(queue, not_before=due)
        broker.publish(message)
        assert broker.fetch([queue], 10, 0.1) == []
        [delivery] = broker.fetch([queue], 10, 5)
        assert time.time() >= due - 0.001
        assert delivery.headers["id"] == message.headers["id"]
        broker.ack_many([delivery.tag])

    def test_defer_retimes_and_keeps_the_message(self, broker: Broker) -> None:
        queue = self.queue_name("defer")
        message = make_message(queue)
        broker.publish(message)
        [delivery] = broker.fetch([queue], 10, 5)
        due = time.time() + 0.5
        broker.defer(delivery, due)
        if "delay" in broker.capabilities:
            assert broker.fetch([queue], 10, 0.1) == []
        [again] = broker.fetch([queue], 10, 5)
        if "delay" in broker.capabilities:
            assert time.time() >= due - 0.001
        assert again.headers["id"] == message.headers["id"]
        assert again.body == message.body
        broker.ack_many([again.tag])
        assert broker.fetch([queue], 10, 0.2) == []

    # -- administration --------------------------------------------------------------
    def test_purge_counts_ready_messages(self, broker: Broker) -> None:
        queue = self.queue_name("purge")
        broker.publish_many([make_message(queue) for _ in range(5)])
        [claimed] = broker.fetch([queue], 1, 5)
        assert broker.purge(queue) == 4
        assert broker.fetch([queue], 10, 0.2) == []
        assert broker.purge(queue) == 0
        broker.ack_many([claimed.tag])

    def test_queue_sizes(self, broker: Broker) -> None:
        queue_a = self.queue_name("size-a")
        queue_b = self.queue_name("size-b")
        broker.publish_many([make_message(queue_a) for _ in range(3)]
                            + [make_message(queue_b) for _ in range(2)])
        sizes = broker.queue_sizes()
        if not sizes:
            pytest.skip(f"{type(broker).__name__} cannot report queue sizes")
        assert sizes[queue_a] == 3 and sizes[queue_b] == 2
        [claimed] = broker.fetch([queue_a], 1, 5)
        assert broker.queue_sizes()[queue_a] == 2
        broker.ack_many([claimed.tag])

    # -- volume and concurrency ------------------------------------------------------
    def test_publish_many_thousand_fetched_exactly_once(self, broker: Broker) -> None:
        queue = self.queue_name("bulk")
        count = self.bulk_messages
        messages = [make_message(queue) for _ in range(count)]
        broker.publish_many(messages)
        got = self.drain(broker, [queue], limit=100)
        ids = _ids(got)
        assert len(ids) == count and set(ids) == {m.headers["id"] for m in messages}
        assert len({d.tag for d in got}) == count
        broker.ack_many([d.tag for d in got])
        assert broker.fetch([queue], 10, 0.2) == []

    def test_concurrent_consumers_get_each_message_once(self, broker: Broker) -> None:
        queue = self.queue_name("concurrent")
        total = self.concurrent_messages
        messages = [make_message(queue) for _ in range(total)]
        seen: list[list[str]] = [[], []]
        errors: list[BaseException] = []
        lock = threading.Lock()
        # distinct ids, not deliveries: with concurrent copies allowed, counting
        # deliveries would stop the consumers one message short
        distinct: set[str] = set()

        def consume(index: int) -> None:
            consumer = self.make_broker()
            deadline = time.monotonic() + 30
            try:
                while time.monotonic() < deadline:
                    batch = consumer.fetch([queue], 7, 0.2)
                    if batch:
                        seen[index].extend(_ids(batch))
                        consumer.ack_many([d.tag for d in batch])
                    with lock:
                        distinct.update(_ids(batch))
                        if len(distinct) >= total:
                            return
            except BaseException as exc:
                errors.append(exc)
            finally:
                consumer.close()  # per-thread connections belong to this thread

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        broker.publish_many(messages)
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        all_seen = seen[0] + seen[1]
        assert set(all_seen) == {m.headers["id"] for m in messages}
        # a consumer never gets back a message it holds or has acked
        assert [len(s) for s in seen] == [len(set(s)) for s in seen]
        copies = len(all_seen) - total
        if self.concurrent_copies:
            assert copies <= max(1, total // 100), f"{copies} messages delivered twice"
        else:
            assert copies == 0, f"{copies} messages delivered twice"
        assert broker.fetch([queue], 10, 0.2) == []


class BackendContract:
    """The behaviour every result ``Backend`` promises, as tests to inherit.

    Subclass it and supply a ``backend_url`` fixture giving a URL whose store is empty
    and unique to the test::

        class TestMyBackend(BackendContract):
            @pytest.fixture
            def backend_url(self, tmp_path):
                return f"mystore://{tmp_path}/results"

    Backends are built with ``fastq.backends.create_backend(backend_url, **options)``;
    override ``make_backend`` to build them differently. Every backend made is closed
    after the test. Stores that expire keys natively (and so report 0 from
    ``cleanup()``) set ``expires_natively = True``. Tests of saved groups skip unless the
    backend lists the ``groups`` capability.
    """

    expires_natively = False
    #: The expiry, in seconds, the expiry tests give results (a store and a read must fit
    #: in it on a loaded machine: 0.3 s failed once in CI, MariaDB under four processes) ...
    short_expiry = 1.0
    #: ... and how long past it a result may still be readable (memcached counts whole
    #: seconds).
    expiry_slack = 0.0

    @pytest.fixture(autouse=True)
    def _backend_contract_setup(self, backend_url: str) -> Iterator[None]:
        self.backend_url = backend_url
        self._made_backends: list[Backend] = []
        yield
        for backend in self._made_backends:
            backend.close()

    def make_backend(self, **options: Any) -> Backend:
        """A new backend instance on the test's URL, sharing the store with the others."""
        backend = create_backend(self.backend_url, **options)
        self._made_backends.append(backend)
        return backend

    @pytest.fixture
    def backend(self) -> Backend:
        return self.make_backend()

    def require(self, backend: Backend, capability: str) -> None:
        if capability not in backend.capabilities:
            pytest.skip(f"{type(backend).__name__} lacks the {capability!r} capability")

    def test_store_and_get_success(self, backend: Backend) -> None:
        task_id = str(uuid.uuid4())
        result = {"numbers": [1, 2.5, None], "text": "héllo", "ok": True}
        backend.store(task_id, "SUCCESS", result)
        meta = backend.get(task_id)
        assert meta["status"] == "SUCCESS"
        assert meta["result"] == result
        assert meta["task_id"] == task_id
        assert meta["traceback"] is None
        assert meta["date_done"]

    def test_unknown_id_is_pending(self, backend: Backend) -> None:
        task_id = str(uuid.uuid4())
        meta = backend.get(task_id)
        assert meta["status"] == "PENDING"
        assert meta["result"] is None and meta["task_id"] == task_id

    def test_instances_share_results(self) -> None:
        writer, reader = self.make_backend(), self.make_backend()
        task_id = str(uuid.uuid4())
        writer.store(task_id, "SUCCESS", 42)
        assert reader.get(task_id)["result"] == 42

    def test_success_is_not_overwritten(self, backend: Backend) -> None:
        task_id = str(uuid.uuid4())
        backend.store(task_id, "SUCCESS", "first")
        backend.store(task_id, "FAILURE", ValueError("late"), "Traceback ...")
        backend.store(task_id, "RETRY", RuntimeError("later"))
        backend.store(task_id, "SUCCESS", "second")
        meta = backend.get(task_id)
        assert meta["status"] == "SUCCESS" and meta["result"] == "first"

    def test_other_states_are_overwritten(self, backend: Backend) -> None:
        task_id = str(uuid.uuid4())
        backend.store(task_id, "STARTED", {"pid": 1})
        assert backend.get(task_id)["status"] == "STARTED"
        backend.store(task_id, "RETRY", KeyError("k"))
        assert backend.get(task_id)["status"] == "RETRY"
        backend.store(task_id, "SUCCESS", 7)
        assert backend.get(task_id)["result"] == 7

    def test_store_many(self, backend: Backend) -> None:
        ids = [str(uuid.uuid4()) for _ in range(50)]
        backend.store_many((task_id, "SUCCESS", n, None, None) for n, task_id in enumerate(ids))
        stored = backend._get_many(ids + ["missing"])
        assert set(stored) == set(ids)
        assert [backend.get(task_id)["result"] for task_id in ids] == list(range(50))

    def test_store_many_of_nothing(self, backend: Backend) -> None:
        # a worker flushes an empty batch often: it must store nothing and leave the
        # backend usable, not fail or send a malformed request
        task_id = str(uuid.uuid4())
        assert backend.store_many([]) is None
        assert backend.get(task_id)["status"] == "PENDING"
        backend.store_many([(task_id, "SUCCESS", 3, None, None)])
        assert backend.get(task_id)["result"] == 3

    def test_store_extra_fields(self, backend: Backend) -> None:
        task_id = str(uuid.uuid4())
        backend.store(task_id, "SUCCESS", 1, extra={"name": "contract.task", "retries": 2})
        meta = backend.get(task_id)
        assert meta["name"] == "contract.task" and meta["retries"] == 2

    def test_failure_stores_the_exception_portably(self, backend: Backend) -> None:
        task_id = str(uuid.uuid4())
        backend.store(task_id, "FAILURE", ValueError("x"), "tb")
        meta = backend.get(task_id)
        assert meta["status"] == "FAILURE"
        assert meta["traceback"] == "tb"
        assert meta["result"]["exc_type"] == "ValueError"
        assert meta["result"]["exc_message"] == ["x"]
        exc = exception_from_dict(meta["result"])
        assert type(exc) is ValueError and exc.args == ("x",)

    def test_wait_returns_when_another_thread_stores(self, backend: Backend) -> None:
        task_id = str(uuid.uuid4())
        errors: list[BaseException] = []

        def finish_later() -> None:
            writer = self.make_backend()
            try:
                time.sleep(0.2)
                writer.store(task_id, "STARTED")
                time.sleep(0.1)
                writer.store(task_id, "SUCCESS", "done")
            except BaseException as exc:
                errors.append(exc)
            finally:
                writer.close()  # per-thread connections belong to this thread

        thread = threading.Thread(target=finish_later)
        thread.start()
        try:
            meta = backend.wait(task_id, timeout=10)
        finally:
            thread.join(10)
        assert not errors, errors
        assert meta["status"] == "SUCCESS" and meta["result"] == "done"

    def test_wait_returns_a_ready_result_at_once(self, backend: Backend) -> None:
        task_id = str(uuid.uuid4())
        backend.store(task_id, "FAILURE", ValueError("x"))
        assert backend.wait(task_id, timeout=0)["status"] == "FAILURE"

    def test_wait_times_out(self, backend: Backend) -> None:
        task_id = str(uuid.uuid4())
        backend.store(task_id, "STARTED")
        started = time.monotonic()
        with pytest.raises(ResultTimeout, match=task_id):
            backend.wait(task_id, timeout=0.2)
        assert time.monotonic() - started < 1.2
        with pytest.raises(TimeoutError):  # ResultTimeout is a builtin TimeoutError too
            backend.wait(str(uuid.uuid4()), timeout=0.05, interval=0.01)

    def test_forget(self, backend: Backend) -> None:
        task_id = str(uuid.uuid4())
        backend.store(task_id, "SUCCESS", 1)
        backend.forget(task_id)
        assert backend.get(task_id)["status"] == "PENDING"
        backend.forget(task_id)  # forgetting nothing is fine
        backend.store(task_id, "SUCCESS", 2)  # a forgotten SUCCESS no longer blocks writes
        assert backend.get(task_id)["result"] == 2

    def test_results_expire(self) -> None:
        backend = self.make_backend(expires=self.short_expiry)
        backend.store(str(uuid.uuid4()), "SUCCESS", 0)  # tables and connections made first
        task_id = str(uuid.uuid4())
        backend.store(task_id, "SUCCESS", 1)
        assert backend.get(task_id)["status"] == "SUCCESS"
        time.sleep(self.short_expiry + self.expiry_slack + 0.2)
        assert backend.get(task_id)["status"] == "PENDING"
        assert backend._get_many([task_id]) == {}
        removed = backend.cleanup()
        if not self.expires_natively:
            assert removed == 2
            assert backend.cleanup() == 0
        assert backend.get(task_id)["status"] == "PENDING"

    def test_no_expiry_keeps_results(self) -> None:
        backend = self.make_backend(expires=None)
        task_id = str(uuid.uuid4())
        backend.store(task_id, "SUCCESS", 1)
        assert backend.cleanup() == 0
        assert backend.get(task_id)["result"] == 1

    def test_get_many_in_order(self, backend: Backend) -> None:
        ids = [str(uuid.uuid4()) for _ in range(3)]
        backend.store(ids[0], "SUCCESS", "a")
        backend.store(ids[2], "STARTED")
        metas = backend.get_many(ids)
        assert [m["task_id"] for m in metas] == ids
        assert [m["status"] for m in metas] == ["SUCCESS", "PENDING", "STARTED"]
        assert backend.get_many([]) == []

    # -- groups ----------------------------------------------------------------------
    def make_group(self, backend: Backend, size: int) -> GroupResult:
        return GroupResult(str(uuid.uuid4()),
                           [AsyncResult(str(uuid.uuid4()), backend=backend) for _ in range(size)],
                           backend=backend)

    def test_group_save_and_restore_in_celerys_form(self, backend: Backend) -> None:
        self.require(backend, "groups")
        group = self.make_group(backend, 3)
        assert group.save() is group
        other = self.make_backend()
        restored = GroupResult.restore(group.id, backend=other)
        assert restored is not None and restored.id == group.id
        assert [r.id for r in restored] == [r.id for r in group] and len(restored) == 3
        assert restored == group
        assert other.restore_group(group.id) == [
            [group.id, None], [[[r.id, None], None] for r in group]]
        # restored members read the store they were restored from
        other.store(group[1].id, "SUCCESS", "one")
        assert restored[1].get(timeout=5) == "one"

    def test_nested_group_round_trip(self, backend: Backend) -> None:
        self.require(backend, "groups")
        inner = self.make_group(backend, 2)
        outer = GroupResult(str(uuid.uuid4()), [AsyncResult(str(uuid.uuid4()), backend=backend),
                                                inner], backend=backend).save()
        restored = GroupResult.restore(outer.id, backend=backend)
        assert isinstance(restored, GroupResult)
        assert isinstance(restored[1], GroupResult) and restored[1] == inner
        for n, result in enumerate([outer[0], *inner]):
            backend.store(result.id, "SUCCESS", n)
        assert restored.join(timeout=5) == [0, [1, 2]]
        assert restored.ready() and restored.completed_count() == 2

    def test_unknown_group_restores_as_none(self, backend: Backend) -> None:
        self.require(backend, "groups")
        assert GroupResult.restore(str(uuid.uuid4()), backend=backend) is None

    def test_group_delete(self, backend: Backend) -> None:
        self.require(backend, "groups")
        group = self.make_group(backend, 2).save()
        backend.store(group[0].id, "SUCCESS", 1)
        group.delete()
        assert GroupResult.restore(group.id, backend=backend) is None
        assert backend.get(group[0].id)["result"] == 1  # members are not touched
        group.delete()  # deleting nothing is fine
        group.save()  # saved again after a delete
        assert GroupResult.restore(group.id, backend=backend) == group

    def test_saved_groups_expire(self) -> None:
        backend = self.make_backend(expires=self.short_expiry)
        self.require(backend, "groups")
        group = self.make_group(backend, 1).save()
        assert GroupResult.restore(group.id, backend=backend) == group
        time.sleep(self.short_expiry + self.expiry_slack + 0.2)
        assert GroupResult.restore(group.id, backend=backend) is None
        removed = backend.cleanup()
        if not self.expires_natively:
            assert removed == 1

    def test_group_states_and_join_in_order(self, backend: Backend) -> None:
        group = self.make_group(backend, 3)
        assert not group.ready() and group.completed_count() == 0
        backend.store(group[2].id, "SUCCESS", "c")
        backend.store(group[0].id, "STARTED")
        assert group.completed_count() == 1
        assert not group.ready() and group.waiting() and not group.failed()
        backend.store(group[0].id, "SUCCESS", "a")
        backend.store(group[1].id, "SUCCESS", "b")
        assert group.ready() and group.successful() and group.completed_count() == 3
        assert group.join(timeout=5) == ["a", "b", "c"]
        assert list(group) == group.results and len(group) == 3

    def test_group_join_raises_the_first_failure_in_order(self, backend: Backend) -> None:
        group = self.make_group(backend, 4)
        backend.store(group[3].id, "SUCCESS", 3)
        backend.store(group[2].id, "FAILURE", ValueError("second"))
        backend.store(group[1].id, "FAILURE", KeyError("first"))
        backend.store(group[0].id, "SUCCESS", 0)
        assert group.ready() and group.failed() and not group.successful()
        assert group.completed_count() == 2
        with pytest.raises(KeyError) as info:
            group.join(timeout=5)
        assert info.value.args == ("first",)
        values = group.join(timeout=5, propagate=False)
        assert values[0] == 0 and values[3] == 3
        assert type(values[1]) is KeyError and type(values[2]) is ValueError

    def test_group_join_waits_for_late_members(self, backend: Backend) -> None:
        group = self.make_group(backend, 3)
        errors: list[BaseException] = []

        def finish_later() -> None:
            writer = self.make_backend()
            try:
                for n, result in reversed(list(enumerate(group))):
                    time.sleep(0.1)
                    writer.store(result.id, "SUCCESS", n)
            except BaseException as exc:
                errors.append(exc)
            finally:
                writer.close()

        thread = threading.Thread(target=finish_later)
        thread.start()
        try:
            values = group.join(timeout=10)
        except ResultTimeout:
            values = None
        finally:
            thread.join(10)
        assert not errors, errors  # the writer's failure, if any, before the join's
        assert values == [0, 1, 2]

    def test_group_join_timeout_bounds_the_whole_join(self, backend: Backend) -> None:
        group = self.make_group(backend, 3)
        backend.store(group[0].id, "SUCCESS", 0)
        started = time.monotonic()
        with pytest.raises(ResultTimeout, match=group.id):
            group.join(timeout=0.3)
        assert time.monotonic() - started < 1.5


class PoolContract:
    """The behaviour every worker ``Pool`` promises the consumer, as tests to inherit.

    Subclass it and name the pool class; a pool that cannot interrupt a running task
    sets ``terminates = False`` (then it must say so: ``terminate`` returns False and the
    task runs to its end), one whose concurrency is fixed sets ``resizable = False``
    (then ``grow`` raises ``NotImplementedError``)::

        class TestMyPool(PoolContract):
            pool_class = MyPool

    The jobs are real tasks run by a real ``Executor`` of an App on the in-memory broker,
    and the tests drive the pool as the consumer does: ``submit`` from the test's (main)
    thread, then ``completions`` and ``wait``. Override ``make_pool`` to build the pool
    differently. Every pool made is closed cold and stopped after the test, and the tasks
    still waiting are let go first.
    """

    pool_class: type[Pool]
    #: ``terminate(task_id, signum)`` interrupts a running task
    terminates = True
    #: ``grow``/``shrink`` change how many jobs run at once
    resizable = True
    #: how many jobs at once the tests ask of a resizable pool
    concurrency = 3

    @pytest.fixture(autouse=True)
    def _pool_contract_setup(self) -> Iterator[None]:
        self.app = App("pool-contract", broker=f"memory://{uuid.uuid4()}")
        self._made_pools: list[Pool] = []
        #: waiting tasks return once it is set (at the latest when the test ends)
        self.release_waiting = threading.Event()
        self._lock = threading.Lock()
        self.running = self.most_running = 0
        #: task id -> "started", then "finished" once its body returned normally
        self.progress: dict[str, str] = {}
        self._define_tasks()
        # the solo pool takes the terminate signal; give the test process its own back
        handler = signal.getsignal(TERMINATE_SIGNAL)
        yield
        self.release_waiting.set()
        try:
            for pool in self._made_pools:
                pool.close(cold=True)
                pool.stop(cold=True)
        finally:
            signal.signal(TERMINATE_SIGNAL, handler)
            self.app.close()

    def _define_tasks(self) -> None:
        @self.app.task(name="contract.add")
        def add(x: int, y: int) -> int:
            return x + y

        @self.app.task(name="contract.hold", bind=True)
        def hold(task: Task, seconds: float) -> float:
            """Runs ``seconds``, or until ``release_waiting`` is set, in short sleeps (a
            signal or an asynchronous exception can cut each one short)."""
            task_id = task.request.id
            with self._lock:
                self.progress[task_id] = "started"
                self.running += 1
                self.most_running = max(self.most_running, self.running)
            try:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and not self.release_waiting.is_set():
                    time.sleep(0.005)
                self.progress[task_id] = "finished"
                return seconds
            finally:
                with self._lock:
                    self.running -= 1

        self.add, self.hold = add, hold

    def make_pool(self, concurrency: int = 1) -> Pool:
        """A started pool running at most ``concurrency`` jobs at once."""
        pool = self.pool_class(Executor(self.app, "contract@test"), concurrency)
        self._made_pools.append(pool)
        pool.start()
        return pool

    def job(self, task: Task, *args: Any) -> tuple[Task, Request]:
        """A ``(task, request)`` pair, as the consumer hands the pool."""
        return task, Request({"id": str(uuid.uuid4()), "task": task.name}, list(args), {}, {})

    def collect(self, pool: Pool, count: int, timeout: float = 10.0) -> list[Completion]:
        """Completions until ``count`` have arrived (or ``timeout``), as the consumer
        takes them."""
        done: list[Completion] = []
        deadline = time.monotonic() + timeout
        while len(done) < count and time.monotonic() < deadline:
            done.extend(pool.completions())
            if len(done) < count:
                pool.wait(0.05)
        return done

    def wait_until_started(self, task_id: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while task_id not in self.progress:
            assert time.monotonic() < deadline, f"task {task_id} never started"
            time.sleep(0.005)

    # -- the tests -----------------------------------------------------------------------
    def test_each_submitted_job_completes_once(self) -> None:
        pool = self.make_pool(self.concurrency)
        jobs = [self.job(self.add, n, n) for n in range(20)]
        pool.submit(jobs[:10], lambda: False)
        pool.submit(jobs[10:], lambda: False)
        done = self.collect(pool, 20)
        assert sorted(request.id for request, _action, _argument in done) == sorted(
            request.id for _task, request in jobs)
        assert {action for _request, action, _argument in done} == {ACK}
        assert pool.completions() == []  # each once
        assert pool.running_requests() == []

    def test_runs_as_many_jobs_at_once_as_its_concurrency(self) -> None:
        pool = self.make_pool(self.concurrency)  # a pool of fixed concurrency may ignore it
        pool.submit([self.job(self.hold, 0.2) for _ in range(2 * pool.concurrency)],
                    lambda: False)
        assert len(self.collect(pool, 2 * pool.concurrency)) == 2 * pool.concurrency
        assert self.most_running == pool.concurrency

    def test_warm_close_waits_for_running_jobs_and_releases_the_queued(self) -> None:
        pool = self.make_pool(1)
        running, queued = self.job(self.hold, 0.3), self.job(self.add, 1, 2)
        # a synchronous pool runs the jobs in submit: it stops starting them on should_stop
        pool.submit([running, queued], lambda: running[1].id in self.progress)
        self.wait_until_started(running[1].id)
        pool.close()
        # close returned: the running job has finished, the one never started is released
        done = {request.id: action for request, action, _argument in pool.completions()}
        assert done == {running[1].id: ACK, queued[1].id: RELEASE}
        assert self.progress == {running[1].id: "finished"}

    def test_cold_close_returns_while_a_job_still_runs(self) -> None:
        pool = self.make_pool(1)
        if pool.synchronous:
            pytest.skip(f"{type(pool).__name__} runs jobs inside submit: none is left "
                        "running when close is called")
        running = self.job(self.hold, 30)
        pool.submit([running], lambda: False)
        self.wait_until_started(running[1].id)
        started = time.monotonic()
        pool.close(cold=True)
        assert time.monotonic() - started < 1.0
        # the consumer requeues what still runs
        assert [request.id for request in pool.running_requests()] == [running[1].id]
        assert self.progress[running[1].id] == "started"

    def test_terminate_interrupts_a_running_job_or_says_it_cannot(self) -> None:
        pool = self.make_pool(1)
        target = self.job(self.hold, 30 if self.terminates else 0.5)
        task_id = target[1].id
        answers: list[bool] = []

        def terminate_once_running() -> None:
            self.wait_until_started(task_id)
            answers.append(pool.terminate("not-running", signal.SIGTERM))
            answers.append(pool.terminate(task_id, signal.SIGTERM))

        # from another thread, as the control listener does: solo runs the job in submit
        terminator = threading.Thread(target=terminate_once_running, daemon=True)
        terminator.start()
        started = time.monotonic()
        pool.submit([target], lambda: False)
        done = self.collect(pool, 1, timeout=10)
        terminator.join(5)
        assert [request.id for request, _action, _argument in done] == [task_id]
        if self.terminates:
            assert answers == [False, True]
            assert self.progress[task_id] == "started"  # its body never returned
            assert time.monotonic() - started < 5
        else:
            assert answers == [False, False]
            assert self.progress[task_id] == "finished"

    def test_grow_and_shrink_change_how_many_jobs_run_at_once(self) -> None:
        pool = self.make_pool(1)
        if not self.resizable:
            with pytest.raises(NotImplementedError):
                pool.grow(1)
            with pytest.raises(NotImplementedError):
                pool.shrink(1)
            assert pool.concurrency == 1
            return
        pool.grow(2)
        assert pool.concurrency == 3
        pool.submit([self.job(self.hold, 0.2) for _ in range(6)], lambda: False)
        assert len(self.collect(pool, 6)) == 6
        assert self.most_running == 3
        pool.shrink(5)  # never below one
        assert pool.concurrency == 1
        self.most_running = 0
        pool.submit([self.job(self.hold, 0.1) for _ in range(3)], lambda: False)
        assert len(self.collect(pool, 3)) == 3
        assert self.most_running == 1
