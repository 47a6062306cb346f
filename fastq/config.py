"""Typed settings with Celery's lowercase names, validated on every write, FASTQ_* env overrides."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from ._registry import mask_url
from ._speedups import ENV_SWITCHES
from .exceptions import ConfigurationError

logger = logging.getLogger(__name__)

#: Prefix of the environment variables that override settings: FASTQ_BROKER_URL, ...
ENV_PREFIX = "FASTQ_"

#: Environment variables that are switches of the package itself, not settings.
NON_SETTING_ENV = frozenset({*ENV_SWITCHES, "FASTQ_DEBUG"})


@dataclass
class Settings:
    """Every setting fastq knows, with its default. Names follow Celery's lowercase ones."""

    #: Broker URL; None means the embedded SQLite broker in ./.fastq/broker.sqlite3.
    broker_url: str | None = None
    #: Result backend URL; None means "the same store as the broker" (sqlite/memory).
    result_backend: str | None = None
    #: Seconds a publish keeps trying an unreachable broker before it raises PublishTimeout.
    broker_connection_timeout: float = 4.0
    #: Reconnect attempts in a row a worker's consumer makes, once it has lost the broker
    #: or failed to reach it at start, before the worker stops (None = forever). Celery's
    #: default is 100 (a few minutes); fastq's workers wait out a broker's restart.
    broker_connection_max_retries: int | None = None
    #: Retry at all: False makes a publish one attempt and a lost broker stop the worker.
    broker_connection_retry: bool = True
    #: Extra options handed to the broker class.
    broker_transport_options: dict = field(default_factory=dict)
    #: AMQP heartbeat in seconds (0 = off; None: the broker's default, off).
    broker_heartbeat: float | None = None
    #: TLS for AMQP brokers (and rpc://): True, or a dict of ``ca_certs``, ``certfile``,
    #: ``keyfile``, ``cert_reqs`` (ssl.CERT_*), ``server_hostname``; None = per URL.
    broker_use_ssl: Any = None
    #: Deliveries of one message after which it is dead-lettered instead of redelivered.
    broker_max_redeliveries: int = 5
    #: Seconds a claimed message stays invisible on lease brokers (SQLite, Redis) unless
    #: its live worker extends the lease.
    broker_lease_seconds: float = 30.0

    #: Serializer for task messages: json, msgpack, yaml or pickle.
    task_serializer: str = "json"
    #: Serializer for results (the JSON meta document is the only one stored today).
    result_serializer: str = "json"
    #: Content types or serializer names a worker accepts; pickle only if listed here.
    accept_content: tuple = ("json",)
    #: Compression for task bodies: None, "zlib"/"gzip" or "bzip2".
    task_compression: str | None = None
    #: Seconds a stored result lives; 0/None keeps it until forgotten.
    result_expires: float | None = 86400.0
    #: Store name/args/kwargs/worker/queue with each result, like Celery's option.
    result_extended: bool = False
    #: Extra options handed to the result backend class (e.g. ``global_keyprefix`` for
    #: redis and memcached, ``table_prefix`` for db+ URLs).
    result_backend_transport_options: dict = field(default_factory=dict)
    #: Table names of the db+ result backend: {"task": ..., "group": ...}.
    database_table_names: dict = field(default_factory=dict)

    #: Message signing (``app.setup_security()``, the ``auth`` serializer): the PEM files
    #: of this process's RSA key (and its password) and certificate, the directory (or
    #: glob) of the certificates whose signatures are trusted, the digest.
    security_key: str | None = None
    security_key_password: str | None = None
    security_certificate: str | None = None
    security_cert_store: str | None = None
    security_digest: str = "sha256"

    #: Queue a task goes to when nothing else routes it.
    task_default_queue: str = "celery"
    #: Priority for tasks that don't set one (None: broker default).
    task_default_priority: int | None = None
    #: Routes: {"task.name" or "glob.*": "queue" or {"queue": ..., "exchange": ...,
    #: "routing_key": ...}}, a router function, or a list of them (see fastq.routing).
    task_routes: Any = None
    #: The queues (fastq.Queue, Broadcast) workers consume and routes name; None: only
    #: task_default_queue.
    task_queues: Any = None
    #: A route naming a queue missing from task_queues makes it (False: an error).
    task_create_missing_queues: bool = True
    #: Type of the exchange of a queue made that way (None: direct).
    task_create_missing_queue_exchange_type: str | None = None
    #: RabbitMQ queue type of a queue made that way: "classic" or "quorum" (None: classic).
    task_create_missing_queue_type: str | None = None
    #: Exchange of queues that name none (None: the default queue's name).
    task_default_exchange: str | None = None
    #: Type of that exchange: direct, topic or fanout (non-direct needs RabbitMQ).
    task_default_exchange_type: str = "direct"
    #: Routing key of the default queue's binding (None: the default queue's name).
    task_default_routing_key: str | None = None
    #: RabbitMQ queue type of the queues fastq declares: "classic" or "quorum".
    task_default_queue_type: str = "classic"
    #: x-max-priority of every declared queue that sets none (RabbitMQ; None: none).
    task_queue_max_priority: int | None = None
    #: Retry a publish while the broker is unreachable (apply_async(retry=) per call).
    task_publish_retry: bool = True
    #: Bounds of those retries: max_retries, interval_start, interval_step,
    #: interval_max (seconds), timeout (seconds; default broker_connection_timeout).
    task_publish_retry_policy: dict = field(default_factory=dict)
    #: Ack after the task ends (at-least-once); False acks when the task starts.
    task_acks_late: bool = True
    #: Don't store results of successful tasks.
    task_ignore_result: bool = False
    #: Store errors even for tasks with ignore_result.
    task_store_errors_even_if_ignored: bool = False
    #: Store STARTED with {pid, hostname} when a task begins.
    task_track_started: bool = False
    #: Hard time limit in seconds for every task (None = no limit).
    task_time_limit: float | None = None
    #: Soft time limit in seconds for every task (None = no limit).
    task_soft_time_limit: float | None = None
    #: Seconds before a retry when neither countdown nor eta is given.
    task_default_retry_delay: float = 180.0
    #: Retries allowed by Task.retry() before MaxRetriesExceededError.
    task_max_retries: int | None = 3
    #: Rate limit for tasks that don't set one, e.g. "100/s" (None = unlimited).
    task_default_rate_limit: str | None = None
    #: Run tasks in the caller on delay()/apply_async(), for tests.
    task_always_eager: bool = False
    #: Re-raise exceptions of eager tasks in the caller.
    task_eager_propagates: bool = False

    #: Messages held per unit of concurrency, running ones included (0 = one: a message
    #: is taken only when a slot is free). None, the default, sizes the window from the
    #: tasks' measured durations: deep for short tasks, one per slot for long ones.
    worker_prefetch_multiplier: int | None = None
    #: Worker concurrency; None means 1 for solo and the CPU count for process pools.
    worker_concurrency: int | None = None
    #: Pool implementation: solo (more arrive with the pools issue).
    worker_pool: str = "solo"
    #: Acks are sent together once this many tasks finished ...
    worker_ack_batch_size: int = 1024
    #: ... or this many seconds passed since the oldest unsent ack, whichever is first.
    worker_ack_interval: float = 0.05
    #: Recycle a pool child after this many tasks (None = never).
    worker_max_tasks_per_child: int | None = None
    #: Recycle a pool child above this resident size in KiB (None = never).
    worker_max_memory_per_child: int | None = None
    #: Largest task body a worker decodes, in bytes, compressed or inflated (None: no
    #: bound); a larger one is dead-lettered as ``too-large`` before it is decoded.
    worker_max_message_size: int | None = 64 * 1024 * 1024
    #: Seconds a child of an autoscaled prefork pool may stay idle before it is stopped.
    worker_autoscale_keepalive: float = 30.0
    #: Directory where workers keep their health files.
    worker_state_dir: str = ".fastq/workers"
    #: Workers listen for remote control (revoke) on the broker.
    worker_enable_remote_control: bool = True
    #: Revoked task ids a worker remembers (Celery's REVOKES_MAX) ...
    worker_revokes_max: int = 50_000
    #: ... each for this many seconds (Celery's REVOKE_EXPIRES: 3 hours).
    worker_revoke_expires: float = 10_800.0
    #: File the revoked task ids are kept in across restarts (``--statedb``); None: memory.
    worker_state_db: str | None = None
    #: The ``pool_restart`` remote control command is allowed (Celery's default: off).
    worker_pool_restarts: bool = False
    #: Send task events (task-received, task-succeeded, ...) for Flower (``-E``).
    worker_send_task_events: bool = False
    #: Seconds between worker-heartbeat events (Celery's 2.0); 0 sends no worker events.
    worker_heartbeat: float = 2.0
    #: Port of the worker's Prometheus ``/metrics`` (``--metrics-port``); None: not served.
    worker_metrics_port: int | None = None
    #: Address ``/metrics`` listens on (``--metrics-host``); loopback unless widened.
    worker_metrics_host: str = "127.0.0.1"
    #: Producers send a task-sent event for each task they publish.
    task_send_sent_event: bool = False
    #: Trace context in task messages (``fastq/tracing.py``): None (off), "w3c" (the
    #: ``traceparent``/``tracestate`` headers) or "opentelemetry" (spans too; fastq[otel]).
    tracing: str | None = None

    #: Modules imported by the worker at start so their tasks register.
    imports: tuple = ()
    #: Same as imports (Celery keeps both names).
    include: tuple = ()
    #: Zone the beat's crontabs follow (and ``fastq beat --until``'s naive dates); None,
    #: Celery's default, is UTC with ``enable_utc`` and the machine's zone without. Task
    #: messages always carry UTC.
    timezone: str | None = "UTC"
    #: With no ``timezone``, schedules compute in UTC (True) or the machine's zone (False).
    enable_utc: bool = True

    #: Periodic tasks, Celery's format: {name: {"task", "schedule", "args", "kwargs",
    #: "options"}}; ``schedule`` is seconds, a timedelta or a ``fastq.schedules`` object.
    beat_schedule: dict = field(default_factory=dict)
    #: Longest sleep of the beat between two looks at its entries, in seconds (also how
    #: soon it sees a change made with ``fastq schedule``).
    beat_max_loop_interval: float = 5.0
    #: Seconds a beat's claim of a run stays its own: past it, another beat publishes the
    #: run (with the same task id) if the claimant never said it was sent.
    beat_claim_lease: float = 1.0
    #: A crontab run missed by more than this many seconds is not caught up (None: always).
    beat_cron_starting_deadline: float | None = None
    #: ``fastq beat``'s ``-S`` when none is given: "django" (or django-celery-beat's
    #: DatabaseScheduler, as a dotted name or the class) adds the entries of its tables;
    #: None or Celery's own schedulers (its default ``celery.beat:PersistentScheduler``)
    #: mean fastq's beat alone.
    beat_scheduler: str | type | None = None

    #: bumped by every change, so that what the App makes from the settings (routing)
    #: is made again (not a setting)
    version: ClassVar[int] = 0

    def update(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Set several settings, validating names and coercing values."""
        for source in (values or {}, kwargs):
            for name, value in source.items():
                setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        key = _check_name(name)
        # what the App made from the settings (routing) is made again once this changes
        self.__dict__["version"] = self.__dict__.get("version", 0) + 1
        if key in _FIELD_TYPES:
            object.__setattr__(self, key, _coerce(key, value))
        else:
            # one of Celery's settings fastq does not apply: kept for reading back, as any
            # attribute (None until set)
            _warn_ignored(key)
            self.__dict__[key] = value

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)

    def __getitem__(self, name: str) -> Any:
        return getattr(self, _check_name(name))

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in _FIELD_TYPES or name in IGNORED_SETTINGS)

    def table(self, with_defaults: bool = False, censored: bool = True) -> dict[str, Any]:
        """The settings as a dict, by default only those changed from their defaults;
        ``censored`` masks URL passwords and secret-looking values (Celery's
        ``conf.table``)."""
        defaults = _DEFAULTS
        out: dict[str, Any] = {}
        for name, value in self.as_dict().items():
            if with_defaults or value != defaults[name]:
                out[name] = _censor(name, value) if censored else value
        for name, value in sorted((name, value) for name, value in self.__dict__.items()
                                  if name in IGNORED_SETTINGS):
            out[name] = _censor(name, value) if censored else value
        return out

    def humanize(self, with_defaults: bool = False, censored: bool = True) -> str:
        """``table()`` as ``name: value`` lines, as Celery's ``conf.humanize``."""
        return "\n".join(f"{name}: {value!r}" for name, value in
                         self.table(with_defaults, censored).items())

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def apply_env(self, environ: Mapping[str, str] | None = None) -> None:
        """Override settings from FASTQ_<NAME> variables (FASTQ_BROKER_URL=...)."""
        environ = os.environ if environ is None else environ
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX) or key in NON_SETTING_ENV:
                continue
            name = key[len(ENV_PREFIX):].lower()
            if name not in _FIELD_TYPES:
                continue  # other FASTQ_* variables (test switches, the run dir) are not settings
            setattr(self, name, _parse_env(name, raw))

    def from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Copy settings from a module, class or mapping (or a dotted path to one).

        With ``namespace="CELERY"`` only ``CELERY_*`` names are read, lowercased without the
        prefix, as in Django settings. Without it, every public lowercase attribute is a
        setting and must be known.
        """
        if isinstance(obj, str):
            module_name, _, attr = obj.partition(":")
            obj = importlib.import_module(module_name)
            if attr:
                obj = getattr(obj, attr)
        items = obj.items() if isinstance(obj, Mapping) else (
            (k, getattr(obj, k)) for k in dir(obj))
        for key, value in items:
            if namespace:
                prefix = namespace.rstrip("_") + "_"
                if not key.startswith(prefix):
                    continue
                key = key[len(prefix):].lower()
            elif key in _OLD_NAMES:
                key = _OLD_NAMES[key]  # Celery 3's uppercase names
            elif key in _CALLABLE_SETTINGS or key in IGNORED_SETTINGS:
                pass  # a setting that may be callable: a router function, a scheduler class
            elif key.startswith("_") or not key.islower():
                continue
            elif callable(value) or isinstance(value, type(os)):
                continue  # helper functions and imported modules in a config module
            setattr(self, key, value)


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(Settings)}

#: Settings whose value may be a function or a class, which ``from_object`` takes from
#: a module although it skips a module's other functions and classes (its helpers).
_CALLABLE_SETTINGS = frozenset(name for name, kind in _FIELD_TYPES.items()
                               if kind == "Any" or "| type" in kind)


def _check_name(name: str) -> str:
    """The lowercase name of setting ``name`` (a field or an ignored Celery setting)."""
    if name in _FIELD_TYPES:
        return name
    name = _OLD_NAMES.get(name, name)
    lowered = name.lower()
    if lowered in _FIELD_TYPES or lowered in IGNORED_SETTINGS:
        return lowered
    close = difflib.get_close_matches(lowered, [*_FIELD_TYPES, *IGNORED_SETTINGS], n=1,
                                      cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigurationError(f"unknown setting {name!r}{hint}")


#: Settings whose 0 means "the default" in Celery (its beat_max_loop_interval default is
#: 0: the scheduler's own); fastq's default is a number, so 0 gives that number.
_ZERO_MEANS_DEFAULT = frozenset({"beat_max_loop_interval"})


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELD_TYPES[name]
    if kind == "Any":
        return value
    optional = "None" in kind
    base = kind.split("|")[0].strip()
    if value is None:
        if optional:
            return None
        if base == "dict":
            return {}  # Celery writes "none given" as None (database_table_names)
        raise ConfigurationError(f"setting {name!r} cannot be None")
    try:
        if base == "bool":
            if isinstance(value, str):
                return _parse_bool(name, value)
            if not isinstance(value, (bool, int)):
                raise TypeError
            return bool(value)
        if base == "int":
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise TypeError
            # every float setting counts seconds; Celery takes timedeltas for them
            seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
            if seconds == 0 and name in _ZERO_MEANS_DEFAULT:
                return Settings.__dataclass_fields__[name].default
            return seconds
        if base == "str":
            if not (isinstance(value, str) or "| type" in kind and isinstance(value, type)):
                raise TypeError
            return value
        if base == "tuple":
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(value)
        if base == "dict":
            if not isinstance(value, Mapping):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"setting {name!r} must be {kind}, got {type(value).__name__} {value!r}") from None
    return value


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigurationError(f"setting {name!r} must be a boolean, got {raw!r}")


def setting_from_text(name: str, raw: str) -> tuple[str, Any]:
    """``(setting name, value)`` for a setting written as text, in an ini file say, read
    as its ``FASTQ_<NAME>`` variable would be: JSON for dict and free-form settings,
    ``none``/``null`` where None is allowed; assigning the value coerces the rest.

    Raises:
        ConfigurationError: ``name`` is no setting (with a "did you mean"), or bad JSON.
    """
    key = _check_name(name)
    if key not in _FIELD_TYPES:  # one of Celery's settings fastq does not apply
        return key, raw
    return key, _parse_env(key, raw)


def _parse_env(name: str, raw: str) -> Any:
    kind = _FIELD_TYPES[name]
    if "None" in kind and raw.strip().lower() in {"none", "null"}:
        return None
    if kind.startswith(("dict", "Any")):
        import orjson

        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConfigurationError(f"{ENV_PREFIX}{name.upper()} must be JSON: {exc}") from None
    return raw


# -- Celery's settings fastq accepts without applying --------------------------------------
# Every name of Celery 5's configuration reference is either a field of Settings (applied)
# or below, with why fastq does not apply it; setting one logs that once per process.

def _each(names: str, reason: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), reason)


_NO_BACKEND = "fastq has no {} result backend"

#: Celery setting name -> why fastq accepts it but does not apply it.
IGNORED_SETTINGS: dict[str, str] = {
    # result stores fastq does not have
    **_each("azureblockblob_base_path azureblockblob_connection_timeout "
            "azureblockblob_container_name azureblockblob_read_timeout "
            "azureblockblob_retry_increment_base azureblockblob_retry_initial_backoff_sec "
            "azureblockblob_retry_max_attempts", _NO_BACKEND.format("Azure Block Blob")),
    **_each("cassandra_auth_kwargs cassandra_auth_provider cassandra_bundle_path "
            "cassandra_entry_ttl cassandra_keyspace cassandra_options cassandra_port "
            "cassandra_read_consistency cassandra_servers cassandra_table "
            "cassandra_write_consistency", _NO_BACKEND.format("Cassandra")),
    **_each("cosmosdbsql_collection_name cosmosdbsql_consistency_level "
            "cosmosdbsql_database_name cosmosdbsql_max_retry_attempts "
            "cosmosdbsql_max_retry_wait_time", _NO_BACKEND.format("CosmosDB")),
    **_each("elasticsearch_max_retries elasticsearch_retry_on_timeout "
            "elasticsearch_save_meta_as_text elasticsearch_timeout",
            _NO_BACKEND.format("Elasticsearch")),
    **_each("gcs_base_path gcs_bucket gcs_project gcs_ttl", _NO_BACKEND.format("GCS")),
    **_each("s3_access_key_id s3_base_path s3_bucket s3_endpoint_url s3_region "
            "s3_secret_access_key", _NO_BACKEND.format("S3")),
    "arangodb_backend_settings": _NO_BACKEND.format("ArangoDB"),
    "couchbase_backend_settings": _NO_BACKEND.format("Couchbase"),
    "mongodb_backend_settings": _NO_BACKEND.format("MongoDB"),
    # result stores fastq has, configured another way
    **_each("redis_backend_use_ssl redis_db redis_host redis_max_connections redis_password "
            "redis_port redis_retry_on_timeout redis_socket_connect_timeout "
            "redis_socket_keepalive redis_socket_timeout redis_username",
            "the redis:// result backend reads its server, credentials and TLS from the "
            "result_backend URL and result_backend_transport_options"),
    **_each("cache_backend cache_backend_options",
            "the memcached result backend is chosen by result_backend='cache+memcached://...'"),
    **_each("database_url database_engine_options database_short_lived_sessions "
            "database_create_tables_at_setup database_table_schemas database_engine_callback",
            "the db+ result backend takes its URL from result_backend, creates its tables on "
            "first use and keeps one engine per process"),
    **_each("result_backend_always_retry result_backend_max_retries "
            "result_backend_base_sleep_between_retries_ms "
            "result_backend_max_sleep_between_retries_ms",
            "each result backend reconnects on its own policy"),
    "result_accept_content": "results are read in the one form they are stored: JSON, or "
                             "signed JSON under result_serializer='auth'",
    "result_cache_max": "result handles keep no client-side cache",
    "result_compression": "results are stored uncompressed",
    **_each("result_exchange result_exchange_type",
            "rpc:// replies go through the default exchange to the caller's reply queue"),
    "result_failure_expires": "failed results expire after result_expires like the others",
    "result_persistent": "rpc:// replies are persistent messages already",
    "result_chord_join_timeout": "a chord's result backend counts its members as each "
                                 "finishes; no join waits with a timeout",
    "result_chord_retry_interval": "celery.chord_unlock, for backends that cannot count "
                                   "members, polls once a second",
    "result_chord_expires": "a chord's count expires with result_expires",
    "task_allow_error_cb_on_chord_header": "a chord's link_error goes to its body only "
                                           "(Celery's default)",
    # brokers
    **_each("broker_host broker_port broker_user broker_password broker_vhost "
            "broker_transport", "set them in broker_url"),
    "broker_login_method": "fastq logs in to RabbitMQ with PLAIN (user:password in broker_url)",
    **_each("broker_read_url broker_write_url",
            "fastq uses one broker_url for producing and consuming"),
    "broker_failover_strategy": "fastq connects to one broker URL (no failover list)",
    **_each("broker_pool_limit broker_pool_acquire_timeout",
            "a process keeps one producer connection; there is no connection pool to size"),
    "broker_heartbeat_checkrate": "the AMQP driver checks heartbeats itself",
    "broker_channel_error_retry": "a channel error reopens the channel at once",
    "broker_connection_retry_on_startup": "a worker retries its first connection as any "
                                          "other, per broker_connection_retry and "
                                          "broker_connection_max_retries",
    "broker_native_delayed_delivery_queue_type": "fastq defers ETA tasks in its own delay "
                                                 "queues, not Celery's native delayed delivery",
    "task_default_delivery_mode": "task messages are always persistent (delivery_mode 2)",
    "task_protocol": "fastq sends protocol 2 (and reads 1)",
    # remote control and events
    **_each("control_exchange control_queue_durable control_queue_exclusive "
            "control_queue_expires control_queue_ttl",
            "remote control uses Celery's default pidbox exchange and queue arguments"),
    **_each("event_exchange event_queue_durable event_queue_exclusive event_queue_expires "
            "event_queue_prefix event_queue_ttl event_serializer",
            "events go to Celery's default exchange (celeryev), as JSON"),
    # tasks
    **_each("task_acks_on_failure_or_timeout task_acks_on_failure task_acks_on_timeout",
            "a task that fails or times out is always acked (its FAILURE is stored)"),
    "task_annotations": "not applied: set task options on the decorator or the Task class",
    "task_inherit_parent_priority": "a child task gets its own priority option or the default",
    **_each("task_reject_on_worker_lost task_retry_on_worker_lost",
            "with late acks a task whose worker dies is redelivered, up to "
            "broker_max_redeliveries, then dead-lettered"),
    "task_remote_tracebacks": "tracebacks are stored as text; tblib is not used",
    "task_repr_maxlevels": "argsrepr and kwargsrepr are cut at 1024 characters instead",
    "task_store_eager_result": "an eager task's result lives in its EagerResult only",
    # workers
    **_each("worker_agent worker_autoscaler worker_consumer worker_timer "
            "worker_timer_precision",
            "Celery's worker components (bootsteps) have no counterpart in fastq"),
    "worker_cancel_long_running_tasks_on_connection_loss":
        "running tasks finish; with late acks their messages are redelivered if needed",
    "worker_deduplicate_successful_tasks": "not implemented: redeliveries run again",
    "worker_detect_quorum_queues": "fastq reads quorum queues' x-delivery-count by itself",
    "worker_direct": "workers have no per-worker direct queue",
    "worker_disable_prefetch": "set worker_prefetch_multiplier=0 for the same effect",
    "worker_disable_rate_limits": "rate limits always apply",
    "worker_enable_prefetch_count_reduction": "fastq plans prefetch itself",
    **_each("worker_enable_soft_shutdown_on_idle worker_soft_shutdown_timeout",
            "a warm stop waits for running tasks; a cold stop requeues them"),
    "worker_eta_task_limit": "ETA tasks are never held in worker memory",
    **_each("worker_hijack_root_logger worker_log_color worker_log_format worker_log_datefmt "
            "worker_task_log_format worker_task_log_datefmt worker_redirect_stdouts "
            "worker_redirect_stdouts_level",
            "logging is configured by the fastq command line (--loglevel)"),
    "worker_lost_wait": "a prefork child's loss is seen at once by its parent",
    **_each("worker_pool_putlocks worker_proc_alive_timeout",
            "fastq's prefork children each run their own consumer"),
    "worker_pool_start_method": "use fastq worker --start-method",
    # periodic tasks
    "beat_schedule_filename": "the beat keeps its runs in the store the App's beats share "
                              "(with AMQP alone, beat-state.json beside worker_state_dir)",
    "beat_sync_every": "the beat records each run in its store as it sends it",
    **_each("beat_enable_remote_control beat_remote_control_max_tick_age",
            "the beat answers no remote control commands"),
}

#: Old (uppercase) names whose new name the prefix rules of ``_old_names`` do not give.
_IRREGULAR_OLD_NAMES = {
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_WORKER_LOST_WAIT": "worker_lost_wait",
    "CELERY_DISABLE_RATE_LIMITS": "worker_disable_rate_limits",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_ENABLE_REMOTE_CONTROL": "worker_enable_remote_control",
    "CELERY_MAX_CACHED_RESULTS": "result_cache_max",
    "CELERY_MESSAGE_COMPRESSION": "task_compression",
    "CELERY_REDIRECT_STDOUTS": "worker_redirect_stdouts",
    "CELERY_REDIRECT_STDOUTS_LEVEL": "worker_redirect_stdouts_level",
    "CELERY_RESULT_DBURI": "database_url",
    "CELERY_RESULT_DB_SHORT_LIVED_SESSIONS": "database_short_lived_sessions",
    "CELERY_RESULT_DB_TABLENAMES": "database_table_names",
    "CELERY_RESULT_ENGINE_OPTIONS": "database_engine_options",
    "CELERY_SEND_EVENTS": "worker_send_task_events",
    "CELERY_SEND_TASK_SENT_EVENT": "task_send_sent_event",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
}

#: The prefix each group of settings had before Celery 4's lowercase names.
_OLD_PREFIXES = (("task_", "CELERY_"), ("worker_", "CELERYD_"), ("beat_", "CELERYBEAT_"),
                 ("result_", "CELERY_RESULT_"))


def _old_names(names: Iterable[str]) -> dict[str, str]:
    """Celery 3's uppercase name -> the lowercase one, for every known setting."""
    table: dict[str, str] = {}
    for name in names:
        upper = name.upper()
        table.setdefault(upper, name)
        table.setdefault(f"CELERY_{upper}", name)
        for new_prefix, old_prefix in _OLD_PREFIXES:
            if name.startswith(new_prefix):
                table[old_prefix + upper[len(new_prefix):]] = name
    table.update(_IRREGULAR_OLD_NAMES)
    return table


_warned_ignored: set[str] = set()


def _warn_ignored(name: str) -> None:
    if name not in _warned_ignored:
        _warned_ignored.add(name)
        logger.warning("setting %s is accepted but not applied: %s", name,
                       IGNORED_SETTINGS[name])


#: Names whose values ``humanize``/``table`` hide, as Celery's do.
_SECRET_NAME = re.compile(r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|DATABASE", re.IGNORECASE)


def _censor(name: str, value: Any) -> Any:
    """``value`` of setting (or key) ``name`` as ``table``/``inspect conf`` show it: URL
    passwords masked, values under secret-looking names hidden, and the same applied
    inside mappings and sequences at any depth (a password in
    ``broker_transport_options={'sentinel_kwargs': {'password': ...}}``), as Celery's
    ``filter_hidden_settings``."""
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    if _SECRET_NAME.search(name) and value not in (None, "", {}, ()):
        return "********"
    if isinstance(value, Mapping):
        return {key: _censor(str(key), item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        # items have no name of their own: the sequence's (not secret, or hidden above)
        items = [_censor(name, item) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


_OLD_NAMES = _old_names([*_FIELD_TYPES, *IGNORED_SETTINGS])
# Celery's settings fastq does not apply read as None until set: class attributes rather
# than a __getattr__, whose mere presence would make every read of every setting take
# CPython's slow path (about 1,400 instructions a task in a worker).
for _name in IGNORED_SETTINGS:
    setattr(Settings, _name, None)

_DEFAULTS = Settings().as_dict()

__all__ = ["Settings", "ENV_PREFIX", "IGNORED_SETTINGS"]
