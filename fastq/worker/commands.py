"""The remote control commands a worker answers (Celery's ``inspect`` and ``control``),
each a function of the worker's state returning Celery's reply, field for field.

The control listener (``worker/control.py``) looks a request's ``method`` up in
``COMMANDS`` and calls it with the request's ``arguments``; the reply shapes are those
of Celery 5.7 (``celery-protocol.md`` §6.4), so ``celery inspect``, ``celery control``
and Flower read fastq workers as they read Celery's. Commands run in the listener's
thread: they read the consumer's and pool's state without stopping them, so a reply is a
snapshot that may be a task or two behind.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import orjson

from .. import protocol
from .._registry import mask_url
from ..exceptions import ConfigurationError
from ..middleware.ratelimit import parse_rate
from .events import software_version

if TYPE_CHECKING:
    from ..brokers.base import Delivery
    from ..routing import Queue
    from ..task import Request
    from .supervisor import Worker

logger = logging.getLogger("fastq.worker.control")

#: A command's return value meaning "send no reply" (``shutdown``: the node goes away).
NO_REPLY = object()
#: The task attributes ``registered`` may show (``celery inspect registered rate_limit``).
TASK_INFO_ITEMS = ("rate_limit", "time_limit", "soft_time_limit", "max_retries",
                   "acks_late", "ignore_result", "priority", "queue")


# -- what a request looks like in a reply ------------------------------------------------
def delivery_info(delivery: Delivery | None) -> dict:
    if delivery is None:
        return {"exchange": "", "routing_key": "", "priority": 0, "redelivered": False}
    properties = delivery.properties
    info = properties.get("delivery_info") or {}
    return {"exchange": info.get("exchange", ""),
            "routing_key": info.get("routing_key", delivery.queue),
            "priority": properties.get("priority") or 0,
            "redelivered": bool(delivery.redeliveries)}


def request_info(worker: Worker, request: Request, *, started: bool,
                 safe: bool = False) -> dict:
    """Celery's ``Request.info()``: what ``inspect active``/``reserved`` list per task."""
    headers = request.headers
    return {"id": request.id, "name": request.name,
            "args": headers.get("argsrepr") if safe else list(request.args),
            "kwargs": headers.get("kwargsrepr") if safe else dict(request.kwargs),
            "type": request.name, "hostname": worker.hostname,
            "time_start": worker.started_at_of(request.id) if started else None,
            "acknowledged": started, "delivery_info": delivery_info(request.delivery),
            "worker_pid": os.getpid() if started else None}


def delivery_as_info(worker: Worker, delivery: Delivery, safe: bool = False) -> dict | None:
    """``request_info`` of a prefetched delivery, decoded here (it is not yet); None when
    it cannot be decoded (the consumer will dead-letter it)."""
    from ..task import Request

    try:
        headers, args, kwargs, embed = protocol.decode_task(
            delivery.headers, delivery.properties, delivery.body, None,
            worker.app.conf.worker_max_message_size)
    except Exception:
        return None
    return request_info(worker, Request(headers, args, kwargs, embed, delivery,
                                        worker.hostname), started=False, safe=safe)


def running(worker: Worker) -> list[Request]:
    return list(worker.pool.running_requests())


def prefetched(worker: Worker) -> list[Delivery]:
    """Deliveries in the worker's hands that have not started."""
    consumer = worker.consumer
    started = {id(r.delivery) for r in running(worker)}
    if worker.pool.synchronous:
        # solo runs its batch in order: what comes after the running task waits
        batch = list(consumer._in_hand)
        for index, delivery in enumerate(batch):
            if id(delivery) in started:
                return batch[index + 1:]
        return batch
    return [d for d in list(consumer._in_flight.values())
            if d is not None and id(d) not in started]


# -- inspect -----------------------------------------------------------------------------
def ping(worker: Worker, **_: Any) -> dict:
    return {"ok": "pong"}


def active(worker: Worker, safe: bool | None = None, **_: Any) -> list:
    return [request_info(worker, r, started=True, safe=bool(safe)) for r in running(worker)]


def reserved(worker: Worker, safe: bool | None = None, **_: Any) -> list:
    infos = (delivery_as_info(worker, d, bool(safe)) for d in prefetched(worker))
    return [info for info in infos if info is not None]


def scheduled(worker: Worker, safe: bool | None = None, **_: Any) -> list:
    # a fastq worker holds no ETA task in memory: it goes back to the broker until due
    return []


def registered(worker: Worker, taskinfoitems: Any = None, builtins: bool = False,
               **_: Any) -> list:
    items = [taskinfoitems] if isinstance(taskinfoitems, str) else list(taskinfoitems or ())
    names = []
    for name in sorted(worker.app.tasks):
        if name.startswith("celery.") and not builtins:
            continue
        task = worker.app.tasks[name]
        shown = [f"{item}={getattr(task, item)}" for item in items
                 if item in TASK_INFO_ITEMS and getattr(task, item, None) is not None]
        names.append(f"{name} [{' '.join(shown)}]" if shown else name)
    return names


def stats(worker: Worker, **_: Any) -> dict:
    events = worker.events
    return {"total": dict(events.totals) if events is not None else {},
            "pid": os.getpid(), "clock": str(clock_value(worker)),
            "uptime": int(time.time() - worker.started_at),
            "pool": pool_stats(worker), "broker": broker_stats(worker.app.broker_url),
            "prefetch_count": worker.prefetch, "rusage": rusage(),
            # not in Celery's reply: signed messages rejected (forged, tampered, unsigned,
            # expired signer), as the health file counts them
            "bad_signatures": worker.consumer.counters["bad_signatures"]}


def pool_stats(worker: Worker) -> dict:
    """Celery's ``pool`` entry of ``stats``, in the shape Celery's pool of the same kind
    gives: threads count their threads, green pools their free and running slots, the
    rest (solo, a prefork child) their processes."""
    conf = worker.app.conf
    info: dict[str, Any] = {"implementation": f"fastq.worker.pools:{worker.pool_name}",
                            "max-concurrency": worker.concurrency}
    busy = len(running(worker))
    if worker.pool_name == "threads":
        info["threads"] = worker.concurrency
    elif worker.pool_name in ("gevent", "eventlet", "asyncio"):
        info["free-threads"] = max(0, worker.concurrency - busy)
        info["running-threads"] = busy
    else:
        info.update({"processes": [os.getpid()],
                     "max-tasks-per-child": worker.max_tasks_per_child or "N/A",
                     "put-guarded-by-semaphore": False,
                     "timeouts": [conf.task_soft_time_limit or 0, conf.task_time_limit or 0]})
    return info


def broker_stats(url: str) -> dict:
    """Celery's ``broker`` entry of ``stats``: the connection's parts, no password."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    default_ports = {"amqp": 5672, "amqps": 5671, "pyamqp": 5672, "redis": 6379,
                     "rediss": 6379}
    vhost = unquote(parts.path[1:]) if parts.path.startswith("/") else parts.path
    if scheme.startswith("amqp") or scheme == "pyamqp":
        vhost = vhost or "/"
    return {"hostname": parts.hostname, "userid": unquote(parts.username or "") or None,
            "virtual_host": vhost, "port": parts.port or default_ports.get(scheme),
            "insist": False, "ssl": scheme in ("amqps", "rediss"),
            "transport": "amqp" if scheme in ("amqps", "pyamqp") else scheme,
            "connect_timeout": 4, "transport_options": {}, "login_method": "PLAIN",
            "uri_prefix": None, "heartbeat": 0.0, "failover_strategy": "round-robin",
            "alternates": [], "credential_provider": None}


def rusage() -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {name: getattr(usage, f"ru_{name}") for name in (
        "utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
        "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")}


def revoked(worker: Worker, **_: Any) -> list:
    return list(worker.executor.revoked)


def query_task(worker: Worker, ids: Any = None, **_: Any) -> dict:
    wanted = {ids} if isinstance(ids, str) else set(ids or ())
    found: dict[str, list] = {}
    for request in running(worker):
        if request.id in wanted:
            found[request.id] = ["active", request_info(worker, request, started=True)]
    for delivery in prefetched(worker):
        task_id = delivery.headers.get("id")
        if task_id in wanted and task_id not in found:
            info = delivery_as_info(worker, delivery)
            if info is not None:
                found[task_id] = ["reserved", info]
    return found


def active_queues(worker: Worker, **_: Any) -> list:
    return [queue_info(queue) for queue in worker.queue_entities]


def queue_info(queue: Queue) -> dict:
    """kombu's ``Queue.as_dict(recurse=True)`` shape, which Flower shows."""
    exchange = queue.exchange
    return {"name": queue.name,
            "exchange": {"name": exchange.name if exchange else "",
                         "type": exchange.type if exchange else "direct",
                         "arguments": None,
                         "durable": getattr(exchange, "durable", True),
                         "passive": False,
                         "auto_delete": getattr(exchange, "auto_delete", False),
                         "delivery_mode": None, "no_declare": False},
            "routing_key": queue.routing_key or queue.name,
            "queue_arguments": dict(queue.queue_arguments) or None,
            "binding_arguments": None, "consumer_arguments": None,
            "durable": queue.durable, "exclusive": queue.exclusive,
            "auto_delete": queue.auto_delete, "no_ack": False,
            "alias": getattr(queue, "alias", None), "bindings": [], "no_declare": None,
            "expires": queue.expires, "message_ttl": queue.message_ttl,
            "max_length": queue.max_length, "max_length_bytes": None,
            "max_priority": queue.max_priority}


def conf(worker: Worker, with_defaults: bool = False, **_: Any) -> dict:
    table = worker.app.conf.table(with_defaults=bool(with_defaults), censored=True)
    # the URLs the worker runs with, though they came from the environment or a default
    table["broker_url"] = mask_url(worker.app.broker_url)
    if worker.app.backend_url:
        table["result_backend"] = mask_url(worker.app.backend_url)
    return jsonable(table)


def jsonable(value: Any) -> Any:
    """``value`` with whatever JSON cannot carry (classes, schedules) as its repr."""
    try:
        return orjson.loads(orjson.dumps(value, default=repr,
                                         option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return repr(value)


def report(worker: Worker, **_: Any) -> dict:
    app = worker.app
    lines = [
        "",
        f"software -> fastq:{software_version()} py:{platform.python_version()}",
        f"platform -> system:{platform.system()} arch:{platform.machine()} "
        f"imp:{platform.python_implementation()}",
        f"loader   -> {type(app).__module__}.{type(app).__name__}",
        f"settings -> transport:{urlsplit(app.broker_url).scheme} "
        f"results:{mask_url(app.backend_url) if app.backend_url else 'disabled'}",
        "",
        app.conf.humanize(censored=True),
        ""]
    return {"ok": "\n".join(lines)}


def clock_value(worker: Worker) -> int:
    events = worker.events
    return events.sender.clock() if events is not None else 0


def clock(worker: Worker, **_: Any) -> dict:
    return {"clock": clock_value(worker)}


def hello(worker: Worker, from_node: str | None = None, revoked: Any = None,
          **_: Any) -> Any:
    """A Celery worker starting (mingle) asks its peers for their revoked ids."""
    if from_node == worker.hostname:
        return None
    if revoked:
        worker.executor.revoked.update(list(revoked))
    return {"revoked": list(worker.executor.revoked), "clock": clock_value(worker)}


def inspect_snapshot(worker: Worker) -> dict:
    """What a prefork child reports with each status for its parent to answer inspect
    with: its running and prefetched tasks, tasks seen by name, its events clock."""
    events = worker.events
    return {"active": active(worker), "reserved": reserved(worker),
            "total": dict(events.totals) if events is not None else {},
            "clock": clock_value(worker)}


# -- control -----------------------------------------------------------------------------
def enable_events(worker: Worker, **_: Any) -> dict:
    if worker.events is None:
        return {"error": "event dispatcher unavailable"}
    if worker.events.enable():
        logger.info("%s: task events enabled", worker.hostname)
        return {"ok": "task events enabled"}
    return {"ok": "task events already enabled"}


def disable_events(worker: Worker, **_: Any) -> dict:
    if worker.events is None:
        return {"error": "event dispatcher unavailable"}
    if worker.events.disable():
        logger.info("%s: task events disabled", worker.hostname)
        return {"ok": "task events disabled"}
    return {"ok": "task events already disabled"}


def heartbeat(worker: Worker, **_: Any) -> None:
    if worker.events is not None:
        worker.events.heartbeat()


def rate_limit(worker: Worker, task_name: str | None = None, rate_limit: Any = None,
               **_: Any) -> dict:
    try:
        parse_rate(rate_limit)
    except (ConfigurationError, ValueError) as exc:
        return {"error": f"Invalid rate limit string: {exc!r}"}
    task = worker.app.tasks.get(task_name or "")
    if task is None:
        logger.error("%s: rate limit for unknown task %s", worker.hostname, task_name)
        return {"error": "unknown task"}
    task.rate_limit = rate_limit or None
    if worker.consumer is not None:  # a prefork parent has none: its children apply it
        worker.consumer._buckets.pop(task.name, None)  # the next task takes the new rate
    if not rate_limit:
        logger.info("%s: rate limit of %s disabled", worker.hostname, task_name)
        return {"ok": "rate limit disabled successfully"}
    logger.info("%s: new rate limit for %s: %s", worker.hostname, task_name, rate_limit)
    return {"ok": "new rate limit set successfully"}


def time_limit(worker: Worker, task_name: str | None = None, hard: Any = None,
               soft: Any = None, **_: Any) -> dict:
    task = worker.app.tasks.get(task_name or "")
    if task is None:
        logger.error("%s: time limit for unknown task %s", worker.hostname, task_name)
        return {"error": "unknown task"}
    task.time_limit = float(hard) if hard is not None else None
    task.soft_time_limit = float(soft) if soft is not None else None
    logger.info("%s: new time limits for %s: soft=%s hard=%s", worker.hostname, task_name,
                soft, hard)
    return {"ok": "time limits set successfully"}


# -- the pool's size ---------------------------------------------------------------------
#: Celery's refusal of pool_grow/pool_shrink on an autoscaled pool.
AUTOSCALED = "{} is not supported with autoscale. Adjust autoscale range instead."


def pool_grow(worker: Worker, n: Any = 1, **_: Any) -> dict:
    if worker.autoscale:
        return {"error": AUTOSCALED.format("pool_grow")}
    return resize_pool(worker, int(n), "pool will grow")


def pool_shrink(worker: Worker, n: Any = 1, **_: Any) -> dict:
    if worker.autoscale:
        return {"error": AUTOSCALED.format("pool_shrink")}
    return resize_pool(worker, -int(n), "pool will shrink")


def resize_pool(worker: Worker, delta: int, done: str) -> dict:
    """Run ``delta`` more (or fewer) tasks at once; the prefetch window follows, so the
    new slots get messages (and a smaller pool holds fewer)."""
    pool = worker.pool
    if pool.synchronous:
        return {"error": f"the {worker.pool_name} pool runs one task at a time and cannot "
                         "be resized; use -P threads, gevent, eventlet, asyncio or prefork"}
    if delta > 0:
        pool.grow(delta)
    elif delta < 0:
        pool.shrink(-delta)
    worker.concurrency = pool.concurrency
    worker.window.resize(pool.concurrency)
    logger.info("%s: pool resized to %d (prefetch %d)", worker.hostname, pool.concurrency,
                worker.window.limit)
    return {"ok": done}


def autoscale(worker: Worker, max: Any = None, min: Any = None, **_: Any) -> dict:
    # only prefork autoscales (pools/prefork/answers.py); Celery's words elsewhere
    raise ValueError("Autoscale not enabled")


# -- queues ------------------------------------------------------------------------------
def add_consumer(worker: Worker, queue: str | None = None, exchange: str | None = None,
                 exchange_type: str | None = None, routing_key: str | None = None,
                 **_: Any) -> dict:
    """Start consuming ``queue`` (declared first, bound to ``exchange`` with
    ``routing_key`` when named, as Celery's ``add_consumer``)."""
    if not queue:
        return {"error": "add_consumer needs a queue name"}
    if queue not in worker.queues:
        entity = queue_entity(worker, queue, exchange, exchange_type, routing_key)
        names = worker.broker.prepare_consume([entity])
        worker.broker.declare_consumed(names)
        worker.queue_entities = [*worker.queue_entities, entity]
        # a new list, never one changed in place: the consumer reads it at each fetch
        worker.queues = worker.consumer.queues = [*worker.queues, *names]
        logger.info("%s: started consuming from %s", worker.hostname, queue)
    return {"ok": f"add consumer {queue}"}


def queue_entity(worker: Worker, name: str, exchange: str | None,
                 exchange_type: str | None, routing_key: str | None) -> Queue:
    """``task_queues``' entry called ``name``, or one bound as the request asks."""
    if not exchange:
        return worker.app.queues[name]
    from ..routing import Exchange, Queue

    return Queue(name, Exchange(exchange, exchange_type or "direct"),
                 routing_key=routing_key or name)


def cancel_consumer(worker: Worker, queue: str | None = None, **_: Any) -> dict:
    if queue in worker.queues:
        if len(worker.queues) == 1:
            return {"error": f"{queue} is the only queue this worker consumes; stop the "
                             "worker instead"}
        worker.queue_entities = [q for q in worker.queue_entities if q.name != queue]
        worker.queues = [name for name in worker.queues if name != queue]
        if worker.consumer is not None:  # a prefork parent's children have theirs
            worker.consumer.queues = worker.queues
        logger.info("%s: stopped consuming from %s", worker.hostname, queue)
    return {"ok": f"no longer consuming from {queue}"}


def pool_restart(worker: Worker, modules: Any = None, reload: bool = False,
                 **_: Any) -> dict:
    """Celery's pool restart, which needs ``worker_pool_restarts``: this process starts
    afresh as on SIGHUP, the running tasks finished first, every module imported anew
    (a prefork parent replaces its children instead: ``pools/prefork/answers.py``)."""
    if not worker.app.conf.worker_pool_restarts:
        raise ValueError("Pool restarts not enabled")
    worker.restart("pool_restart")
    return {"ok": "reload started"}


# -- stamped revokes ---------------------------------------------------------------------
def revoke_by_stamped_headers(worker: Worker, headers: Any = None, terminate: bool = False,
                              signal: Any = None, **_: Any) -> dict:
    """Revoke the tasks whose stamps match ``headers`` (Celery 5.3's stamping): those
    that arrive from now on and those already held are not run; with ``terminate`` the
    running ones are interrupted as ``revoke(terminate=True)`` interrupts them."""
    revoked = worker.executor.revoked
    wanted = revoked.add_stamps(headers)
    # held already, vetted on arrival: their ids join the revoked ones, tested again
    # just before each task runs
    revoked.update([d.headers["id"] for d in prefetched(worker)
                    if "id" in d.headers and revoked.stamped(d.headers)])
    if not terminate:
        return {"ok": f"headers {headers} flagged as revoked, but not terminated"}
    terminated: dict[str, set] = {}
    signum = signal_number(signal)
    for request in running(worker):
        matched = stamps_matching(request.headers, wanted)
        if matched:
            revoked.add(request.id)  # not run again if its message comes back
            worker.pool.terminate(request.id, signum)
            for name, values in matched.items():
                terminated.setdefault(name, set()).update(values)
    if not terminated:
        return {"ok": f"headers {headers} were not terminated"}
    return {"ok": f"headers {terminated} revoked"}


def stamps_matching(headers: dict, wanted: dict) -> dict[str, set]:
    """The stamps of a task's ``headers`` that ``wanted`` (name -> values) revokes."""
    stamps = headers.get("stamps") or {}
    matched: dict[str, set] = {}
    for name in headers.get("stamped_headers") or ():
        value = stamps.get(name)
        values = value if isinstance(value, (list, tuple)) else [value]
        hits = {v for v in values if v is not None and v in wanted.get(name, ())}
        if hits:
            matched[name] = hits
    return matched


def signal_number(value: Any) -> int:
    """Celery's ``signal`` argument (``"SIGKILL"``, ``"KILL"``, ``9``) as a number;
    SIGTERM when it names none."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    if isinstance(value, str) and value:
        name = value.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        try:
            return int(signal.Signals[name])
        except KeyError:
            logger.warning("unknown signal %r in a revoke: SIGTERM assumed", value)
    return int(signal.SIGTERM)


# -- memory ------------------------------------------------------------------------------
#: How many ``memsample`` readings a worker keeps for ``memdump``.
MEMORY_SAMPLES = 1000


def memsample(worker: Worker, **_: Any) -> str:
    """The resident size now, as Celery's ``sample_mem`` words it, kept for memdump."""
    from .metrics import resident_bytes

    reading = f"{resident_bytes() / 1024 / 1024:.2f}MB"
    samples = worker.memory_samples
    samples.append(reading)
    del samples[:-MEMORY_SAMPLES]
    return reading


def memdump(worker: Worker, samples: Any = 10, **_: Any) -> str:
    """The last ``samples`` memsample readings and the resident size now."""
    from .metrics import resident_bytes

    kept = worker.memory_samples[-int(samples or 10):]
    lines = ["---- Memory samples ----", *(f"> {i}: {reading}" for i, reading in enumerate(
        kept))]
    lines.append(f"now: {resident_bytes() / 1024 / 1024:.2f}MB")
    return "\n".join(lines) + "\n"


def objgraph(worker: Worker, num: Any = 200, max_depth: Any = 10, type: str = "Request",
             **_: Any) -> dict:
    """A graph of the live objects of ``type`` (memory leaks), with ``objgraph``."""
    try:
        import objgraph as graphs
    except ImportError:
        return {"error": "objgraph needs the objgraph package: pip install objgraph"}
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="fastq-objgraph", suffix=".png",
                                     delete=False) as fh:
        objects = graphs.by_type(type)[:int(num)]
        graphs.show_backrefs(objects, max_depth=int(max_depth), filename=fh.name,
                             highlight=lambda v: v in objects)
    return {"filename": fh.name}


def shutdown(worker: Worker, msg: str | None = None, **_: Any) -> object:
    """A warm shutdown of the whole worker, as SIGTERM (a prefork child asks its
    parent, which stops every child)."""
    logger.warning("%s: %s", worker.hostname, msg or "Got shutdown from remote")
    target = os.getppid() if worker.observer is not None else os.getpid()
    os.kill(target, signal.SIGTERM)
    return NO_REPLY


COMMANDS: dict[str, Callable[..., Any]] = {
    command.__name__: command for command in (
        ping, active, reserved, scheduled, registered, stats, revoked, query_task,
        active_queues, conf, report, clock, hello, enable_events, disable_events, heartbeat,
        rate_limit, time_limit, shutdown, pool_grow, pool_shrink, autoscale, add_consumer,
        cancel_consumer, pool_restart, revoke_by_stamped_headers, memsample, memdump,
        objgraph)}

#: What a prefork child applies to itself when every node hears a request; it answers
#: nothing, its parent answering for the worker (``revoke`` is the listener's own).
APPLIED_BY_EACH_CHILD = frozenset({"revoke", "hello", "enable_events", "disable_events",
                                   "heartbeat", "rate_limit", "time_limit", "add_consumer",
                                   "cancel_consumer", "revoke_by_stamped_headers"})

# ``dump_*`` are the names Celery 3 gave some of these; Flower 1.x still asks for them
COMMANDS.update({"dump_active": active, "dump_reserved": reserved,
                 "dump_schedule": scheduled, "dump_tasks": registered,
                 "dump_revoked": revoked, "dump_conf": conf})

__all__ = ["APPLIED_BY_EACH_CHILD", "COMMANDS", "NO_REPLY"]
