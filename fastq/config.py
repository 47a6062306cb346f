"""Typed settings with Celery's lowercase names, validated on every write, FASTQ_* env overrides."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ConfigurationError

#: Prefix of the environment variables that override settings: FASTQ_BROKER_URL, ...
ENV_PREFIX = "FASTQ_"

#: Environment variables that are switches of the package itself, not settings.
NON_SETTING_ENV = frozenset({"FASTQ_NO_SPEEDUPS", "FASTQ_REQUIRE_SPEEDUPS", "FASTQ_DEBUG"})


@dataclass
class Settings:
    """Every setting fastq knows, with its default. Names follow Celery's lowercase ones."""

    #: Broker URL; None means the embedded SQLite broker in ./.fastq/broker.sqlite3.
    broker_url: str | None = None
    #: Result backend URL; None means "the same store as the broker" (sqlite/memory).
    result_backend: str | None = None
    #: Seconds to wait for the broker before a publish raises PublishTimeout.
    broker_connection_timeout: float = 4.0
    #: Reconnect attempts before giving up (None = forever) when the broker is lost.
    broker_connection_max_retries: int | None = 100
    #: Retry connecting on startup and on loss at all.
    broker_connection_retry: bool = True
    #: Extra options handed to the broker class.
    broker_transport_options: dict = field(default_factory=dict)
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

    #: Queue a task goes to when nothing else routes it.
    task_default_queue: str = "celery"
    #: Priority for tasks that don't set one (None: broker default).
    task_default_priority: int | None = None
    #: Routes: {"task.name" or "glob.*": "queue" or {"queue": ...}}, or a list of them.
    task_routes: Any = None
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

    #: Messages claimed ahead per unit of concurrency (0 = only when a slot is free).
    worker_prefetch_multiplier: int = 4
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

    #: Modules imported by the worker at start so their tasks register.
    imports: tuple = ()
    #: Same as imports (Celery keeps both names).
    include: tuple = ()
    #: Timezone used for naive datetimes given by the user; messages always carry UTC.
    timezone: str = "UTC"
    enable_utc: bool = True

    def update(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Set several settings, validating names and coercing values."""
        for source in (values or {}, kwargs):
            for name, value in source.items():
                setattr(self, _check_name(name), _coerce(name, value))

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, _check_name(name), _coerce(name, value))

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)

    def __getitem__(self, name: str) -> Any:
        return getattr(self, _check_name(name))

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
            elif key.startswith("_") or not key.islower():
                continue
            elif callable(value) or isinstance(value, type(os)):
                continue  # helper functions and imported modules in a config module
            setattr(self, key, value)


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(Settings)}


def _check_name(name: str) -> str:
    if name in _FIELD_TYPES:
        return name
    lowered = name.lower()
    if lowered in _FIELD_TYPES:
        return lowered
    close = difflib.get_close_matches(lowered, list(_FIELD_TYPES), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigurationError(f"unknown setting {name!r}{hint}")


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELD_TYPES[name]
    if kind == "Any":
        return value
    optional = "None" in kind
    if value is None:
        if optional:
            return None
        raise ConfigurationError(f"setting {name!r} cannot be None")
    base = kind.split("|")[0].strip()
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
            return float(value)
        if base == "str":
            if not isinstance(value, str):
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


__all__ = ["Settings", "ENV_PREFIX"]
