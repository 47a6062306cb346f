"""The router: task_queues, task_routes and apply_async's queue/exchange/routing_key, and
what a broker without exchanges makes of them (no servers: the memory broker)."""

from __future__ import annotations

import uuid

import pytest

from fastq import App, Broadcast, Exchange, Queue
from fastq.brokers.base import Backoff, Broker, PartlyPublished
from fastq.exceptions import BrokerConnectionLost, ConfigurationError, PublishTimeout
from fastq.routing import QueueTable, Router


def router(routes=None, queues=None, **table) -> Router:
    return Router(routes, QueueTable(queues, **table))


def test_the_default_route_is_the_default_queue_through_the_default_exchange():
    route = router().route("any.task")
    assert (route.queue.name, route.exchange, route.exchange_type, route.routing_key) == \
        ("celery", "", "direct", "celery")
    assert route.queue.exchange == Exchange("celery")


def test_a_glob_route_to_a_direct_queue_publishes_through_the_default_exchange():
    queues = [Queue("bills", Exchange("money"), routing_key="bill.new")]
    route = router({"billing.*": {"queue": "bills"}}, queues).route("billing.charge")
    # Celery's rule: a direct queue named without an exchange goes by its own name
    assert (route.queue_name, route.exchange, route.routing_key) == ("bills", "", "bills")


def test_a_topic_queue_is_published_to_its_exchange_with_its_key():
    queues = [Queue("eu", Exchange("regions", "topic"), routing_key="eu.#")]
    route = router({"t.*": "eu"}, queues).route("t.x")
    assert (route.exchange, route.exchange_type, route.routing_key) == ("regions", "topic", "eu.#")
    route = router({"t.*": {"queue": "eu", "routing_key": "eu.fr"}}, queues).route("t.x")
    assert route.routing_key == "eu.fr" and route.source == "task_queues"


def test_the_callers_options_win_over_the_routes():
    r = router({"t.*": "routed"})
    assert r.route("t.x", options={"queue": "mine"}).queue_name == "mine"
    route = r.route("t.x", options={"exchange": "ex", "routing_key": "k"})
    assert (route.exchange, route.routing_key, route.source) == \
        ("ex", "k", "apply_async(exchange=...)")
    route = r.route("t.x", options={"exchange": Exchange("tx", "topic"), "routing_key": "a.b"})
    assert (route.exchange, route.exchange_type) == ("tx", "topic")


def test_router_functions_lists_objects_and_dotted_paths():
    seen = []

    def celery_style(name, args, kwargs, options, task=None, **kw):
        seen.append((name, args, kwargs))
        return {"queue": "by-args"} if args and args[0] == "big" else None

    class Old:
        def route_for_task(self, task, args=None, kwargs=None):
            return "old" if task == "t.old" else None

    r = router([celery_style, Old(), lambda name: "by-name" if name == "t.n" else None,
                {"t.*": "glob"}])
    assert r.takes_call_args
    assert r.route("t.x", ("big",), {"k": 1}).queue_name == "by-args"
    assert seen[0] == ("t.x", ("big",), {"k": 1})
    assert r.route("t.old").queue_name == "old"
    assert r.route("t.n").queue_name == "by-name"
    assert r.route("t.other").queue_name == "glob"
    assert router("tests.unit.test_routing.dotted_router").route("x").queue_name == "dotted"
    with pytest.raises(ConfigurationError, match="cannot import router"):
        router("tests.unit.test_routing.missing_router")


def dotted_router(name, args, kwargs, options, task=None, **kw):
    return "dotted"


def test_missing_queues_are_made_unless_forbidden():
    assert router({"t": "new"}).route("t").queue.exchange == Exchange("new")
    made = router({"t": "new"}, missing_exchange_type="topic").route("t")
    assert made.exchange_type == "topic"
    with pytest.raises(ConfigurationError, match="task_create_missing_queues"):
        router({"t": "new"}, [Queue("a")], create_missing=False).route("t")
    quorum = router({"t": "new"}, missing_queue_type="quorum").route("t").queue
    assert quorum.arguments == {"x-queue-type": "quorum"}


def test_queue_arguments_and_max_priority():
    q = Queue("p", max_priority=5, expires=10, message_ttl=1.5, queue_arguments={"x-a": 1})
    assert q.arguments == {"x-a": 1, "x-max-priority": 5, "x-expires": 10_000,
                           "x-message-ttl": 1500}
    table = QueueTable([Queue("a"), Queue("b", max_priority=2)], max_priority=9)
    assert table["a"].arguments["x-max-priority"] == 9
    assert table["b"].arguments["x-max-priority"] == 2
    assert table["a"].exchange == Exchange("celery")  # the default exchange, as Celery


def test_broadcast_queues_are_unique_auto_delete_and_found_by_alias():
    one, two = Broadcast("reload"), Broadcast("reload")
    assert one.name != two.name and one.name.startswith("bcast.")
    assert one.auto_delete and one.exchange == Exchange("reload", "fanout")
    table = QueueTable([one])
    assert table.consumed(["reload"]) == [one]
    route = Router({"t.reload": {"queue": "reload", "exchange": "reload"}}, table).route(
        "t.reload")
    assert (route.exchange, route.exchange_type) == ("reload", "fanout")


def test_a_worker_consumes_task_queues_or_the_selected_ones():
    table = QueueTable([Queue("a"), Queue("b")])
    assert [q.name for q in table.consumed(None)] == ["a", "b"]
    assert [q.name for q in table.consumed(["b"])] == ["b"]
    assert [q.name for q in QueueTable(None).consumed(None)] == ["celery"]


def test_kombu_queues_are_taken_as_they_are():
    kombu = pytest.importorskip("kombu")
    table = QueueTable([kombu.Queue("k", kombu.Exchange("kx", type="topic"), routing_key="k.*",
                                    max_priority=3)])
    assert table["k"].exchange == Exchange("kx", "topic")
    assert table["k"].routing_key == "k.*" and table["k"].arguments["x-max-priority"] == 3


# -- an App on a broker without exchanges (memory://) -----------------------------------
@pytest.fixture
def app():
    app = App("routing", broker=f"memory://{uuid.uuid4().hex}", backend="memory://")
    yield app
    app.close()


def test_apply_async_queue_exchange_and_routing_key_on_a_broker_without_exchanges(app):
    app.conf.task_queues = [Queue("q1", Exchange("ex"), routing_key="k1"), Queue("q2")]
    task = app.task(name="t.r")(lambda: None)
    assert app.build_message("t.r", queue="q2").queue == "q2"
    # a direct exchange: the queue task_queues binds with the key, else the key's queue
    message = app.build_message("t.r", exchange="ex", routing_key="k1")
    assert (message.queue, message.exchange, message.routing_key) == ("q1", "ex", "k1")
    assert app.build_message("t.r", exchange="ex", routing_key="q9").queue == "q9"
    task.apply_async(exchange="ex", routing_key="k1")
    assert [d.queue for d in app.broker.fetch(["q1"], 10, 0.1)] == ["q1"]


def test_a_topic_exchange_is_refused_naming_where_it_came_from(app):
    app.conf.task_queues = [Queue("eu", Exchange("regions", "topic"), routing_key="eu.*")]
    app.conf.task_routes = {"t.eu": "eu"}
    with pytest.raises(ConfigurationError, match=r"topic exchange 'regions' \(from task_queues"):
        app.build_message("t.eu")
    with pytest.raises(ConfigurationError, match=r"apply_async\(exchange=\.\.\.\)"):
        app.build_message("t.x", exchange=Exchange("f", "fanout"), routing_key="")
    with pytest.raises(ConfigurationError, match="queue 'eu' of task_queues is bound to topic"):
        app.broker.prepare_consume(app.queues.consumed(None))


def test_send_task_asks_a_router_function_with_the_call_arguments(app):
    app.conf.task_routes = [lambda name, args, kwargs, options, task=None: (
        "high" if kwargs.get("vip") else None)]
    app.send_task("t.vip", kwargs={"vip": True})
    app.send_task("t.vip", kwargs={"vip": False})
    assert len(app.broker.fetch(["high"], 10, 0.1)) == 1
    assert len(app.broker.fetch(["celery"], 10, 0.1)) == 1


# -- publish retries ----------------------------------------------------------------------
class Unreachable(Broker):
    def __init__(self, **options):
        super().__init__("down://", **options)
        self.attempts = 0

    def _publish(self, messages):
        self.attempts += 1
        raise BrokerConnectionLost("down")

    fetch = ack_many = release_many = reject = dead_letter = purge = None  # type: ignore


def test_retry_false_makes_one_attempt():
    broker = Unreachable(publish_timeout=5)
    with pytest.raises(BrokerConnectionLost):
        broker.publish_many([object()], retry=False)
    assert broker.attempts == 1


def test_a_retry_policy_bounds_the_attempts_and_the_wait():
    broker = Unreachable(publish_timeout=30)
    with pytest.raises(PublishTimeout, match="2 retries"):
        broker.publish_many([object()], retry_policy={
            "max_retries": 2, "interval_start": 0, "interval_step": 0.01, "interval_max": 0.02})
    assert broker.attempts == 3
    broker = Unreachable(publish_timeout=30)
    with pytest.raises(PublishTimeout):
        broker.publish_many([object()], retry_policy={"timeout": 0.05, "interval_start": 0.01})
    assert broker.attempts >= 2
    with pytest.raises(ConfigurationError, match="unknown retry_policy key"):
        broker.publish_many([object()], retry_policy={"max_retry": 1})


def test_partly_published_batches_retry_only_the_rest():
    class Flaky(Unreachable):
        def _publish(self, messages):
            self.attempts += 1
            if self.attempts == 1:
                raise PartlyPublished("half", 1)
            self.sent = list(messages)

    broker = Flaky(publish_timeout=5)
    broker.publish_many(["a", "b"], retry_policy={"interval_start": 0})
    assert broker.sent == ["b"]


def test_a_linear_backoff_steps_up_to_its_maximum():
    backoff = Backoff(0.1, 0.35, step=0.1)
    assert [round(backoff.failed(0), 2) for _ in range(5)] == [0.1, 0.2, 0.3, 0.35, 0.35]


def test_apply_async_retry_options_reach_the_broker(app):
    calls = []
    app.broker.publish_many = lambda messages, **kw: calls.append(kw)  # type: ignore
    task = app.task(name="t.retry")(lambda: None)
    task.delay()
    task.apply_async(retry=False)
    task.apply_async(retry_policy={"max_retries": 1})
    app.conf.task_publish_retry = False
    task.delay()
    assert calls == [{}, {"retry": False, "retry_policy": None},
                     {"retry": True, "retry_policy": {"max_retries": 1}},
                     {"retry": False, "retry_policy": None}]


def test_routes_by_name_and_glob(app):
    app.conf.task_routes = {"billing.*": "money", "emails.send": {"queue": "mail"}}
    assert app.route("billing.charge") == "money"
    assert app.route("emails.send") == "mail"
    assert app.route("other") == "celery"
