"""Result backends behind one interface; ``BACKEND_SCHEMES`` maps URL schemes to them."""

from __future__ import annotations

from .._registry import load_scheme
from .base import Backend

#: URL scheme -> "module:Class", imported only when used.
BACKEND_SCHEMES: dict[str, str] = {
    "memory": "fastq.backends.memory:MemoryBackend",
    "sqlite": "fastq.backends.sqlite:SQLiteBackend",
    "redis": "fastq.backends.redis:RedisBackend",
    "rediss": "fastq.backends.redis:RedisBackend",
    "rpc": "fastq.backends.rpc:RPCBackend",
    "db+sqlite": "fastq.backends.sql:SQLBackend",
    "db+postgresql": "fastq.backends.sql:SQLBackend",
    "db+postgresql+psycopg": "fastq.backends.sql:SQLBackend",
    "db+mysql": "fastq.backends.sql:SQLBackend",
    "db+mysql+pymysql": "fastq.backends.sql:SQLBackend",
    "cache+memcached": "fastq.backends.memcached:MemcachedBackend",
    "django-db": "fastq.contrib.django.backend:DjangoBackend",
}

#: Extra to install for a scheme whose implementation needs an optional dependency.
SCHEME_EXTRAS: dict[str, str] = {
    "redis": "redis", "rediss": "redis",
    "db+sqlite": "sql", "db+postgresql": "sql", "db+postgresql+psycopg": "sql",
    "db+mysql": "sql", "db+mysql+pymysql": "sql",
    "cache+memcached": "memcached",
    "django-db": "django",
}


def backend_class(url: str) -> type[Backend]:
    """The Backend class for ``url``; a clear error for unknown or uninstalled schemes."""
    return load_scheme("result backend", url, BACKEND_SCHEMES, SCHEME_EXTRAS)


def create_backend(url: str, **options) -> Backend:
    """A Backend for ``url``."""
    return backend_class(url)(url, **options)


__all__ = ["Backend", "BACKEND_SCHEMES", "backend_class", "create_backend"]
