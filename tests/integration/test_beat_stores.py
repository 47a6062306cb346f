"""The beat's shared store on each server: a run is claimed once, a claim left unsent
is taken over after its lease, a run at or before the entry's last is never claimed,
and the database schedule source keeps what ``fastq schedule`` writes."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from fastq._beat_store import MemoryStore, RedisStore, SQLStore
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis
from tests.integration.sql_support import MARIADB_URL, POSTGRES_URL, require_server

# the beat's stores have no compiled twin: CI's second pass leaves them out
pytestmark = pytest.mark.twin_neutral

@pytest.fixture(params=["memory", "sqlite", "redis", "postgresql", "mariadb"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        made = SQLStore(path=str(tmp_path / "beat.sqlite3"))
        yield made
        made.close()
        return
    if request.param == "redis":
        require_redis()
        prefix = f"test-{uuid.uuid4().hex[:8]}:fastq:beat:"
        made = RedisStore(REDIS_URL, prefix=prefix)
        yield made
        made.close()
        delete_keys(prefix + "*")
        return
    if request.param == "postgresql":
        require_server(5432, "PostgreSQL")
    else:
        require_server(3306, "MariaDB")  # db+mysql:// is PyMySQL, of the sql extra
    from fastq.backends import create_backend

    backend = create_backend(POSTGRES_URL if request.param == "postgresql" else MARIADB_URL)
    yield SQLStore(engine=backend.engine)  # type: ignore[attr-defined]
    backend.close()


@pytest.fixture
def name():
    """An entry name of this test alone (the SQL tables are shared by every run)."""
    return f"entry-{uuid.uuid4().hex[:10]}"


def test_first_runs_are_set_once(store, name):
    store.init({name: 100.0})
    store.init({name: 200.0})
    assert store.load()[name] == (100.0, 0)


def test_a_run_is_claimed_once_and_never_after_it_was_sent(store, name):
    store.init({name: 100.0})
    due = 101_000_000
    assert store.claim([(name, due)], "a", lease=30) == {(name, due)}
    assert store.claim([(name, due)], "b", lease=30) == set()
    store.complete([(name, due, 101.0)])
    assert store.load()[name] == (101.0, due)
    time.sleep(0.05)
    assert store.claim([(name, due)], "b", lease=0.01) == set()
    # an older run (a beat whose view is stale) is refused by the state, not the claim
    assert store.claim([(name, due - 1_000_000)], "b", lease=30) == set()
    assert store.claim([(name, due + 1_000_000)], "b", lease=30) == {(name, due + 1_000_000)}


def test_a_claim_left_unsent_is_taken_over_once_its_lease_ran_out(store, name):
    store.init({name: 100.0})
    due = 101_000_000
    assert store.claim([(name, due)], "dead", lease=0.2) == {(name, due)}
    assert store.claim([(name, due)], "b", lease=30) == set()
    time.sleep(0.35)
    assert store.claim([(name, due)], "b", lease=30) == {(name, due)}
    assert store.claim([(name, due)], "c", lease=30) == set()


def test_many_runs_claim_in_few_round_trips(store, name):
    names = [f"{name}-{i}" for i in range(1000)]
    store.init(dict.fromkeys(names, 100.0))
    before = store.round_trips
    got = store.claim([(n, 101_000_000) for n in names], "a", lease=30)
    assert len(got) == 1000
    assert store.round_trips - before <= 3  # 400 runs a statement or script call
    before = store.round_trips
    store.complete([(n, 101_000_000, 101.0) for n in names])
    assert store.round_trips - before <= 1


def test_schedule_source_entries(store, name):
    doc = {"task": "t.x", "schedule": {"every": 5.0}, "args": [1], "kwargs": {},
           "options": {}}
    store.put_entry(name, doc)
    assert store.entries()[name] == {**doc, "enabled": True}
    assert store.set_enabled(name, False)
    assert store.entries()[name]["enabled"] is False
    assert store.remove_entry(name)
    assert name not in store.entries()
    assert not store.remove_entry(name) and not store.set_enabled(name, True)


def _another(store):
    """A second store on the same server, with its own connections (another beat)."""
    if isinstance(store, MemoryStore):
        return store
    if isinstance(store, RedisStore):
        return RedisStore(REDIS_URL, prefix=store._prefix)
    if store._engine is not None:
        return SQLStore(engine=store._engine)
    return SQLStore(path=store._path)


def test_beats_claiming_at_once_get_each_run_once(store, name):
    stores = [store] + [_another(store) for _ in range(3)]
    names = [f"{name}-{i}" for i in range(100)]
    store.init(dict.fromkeys(names, 100.0))
    runs = [(n, 101_000_000) for n in names]

    def race(owner_prefix: str, lease: float) -> list[set]:
        barrier = threading.Barrier(len(stores))
        got: list[set] = [set() for _ in stores]

        def claim(i: int) -> None:
            barrier.wait()
            # each beat sees the runs in its own order
            got[i] = stores[i].claim(runs[i:] + runs[:i], f"{owner_prefix}{i}", lease)
        threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return got

    try:
        first = race("dead", 0.3)
        assert sum(len(g) for g in first) == len(runs)  # each run to one beat, all taken
        assert set().union(*first) == set(runs)
        time.sleep(0.45)  # every lease lapses, nothing was sent: the runs are up again
        second = race("next", 30)
        assert sum(len(g) for g in second) == len(runs)
        assert set().union(*second) == set(runs)
    finally:
        for other in stores[1:]:
            if other is not store:
                other.close()


def test_names_are_kept_whole_and_case_sensitive(store, name):
    # Celery names add_periodic_task's entries after the signature: they can be long
    long = f"{name}-" + "x" * 300
    upper = name.upper()
    store.init({long: 100.0, name: 100.0, upper: 200.0})
    state = store.load()
    assert (state[long], state[name], state[upper]) == ((100.0, 0), (100.0, 0), (200.0, 0))
    due = 300_000_000
    assert store.claim([(long, due), (name, due)], "a", lease=30) == {(long, due), (name, due)}
    assert store.claim([(upper, due)], "a", lease=30) == {(upper, due)}
    assert store.claim([(long, due)], "b", lease=30) == set()
    store.complete([(long, due, 300.0)])
    assert store.load()[long] == (300.0, due)
    assert store.load()[name] == (100.0, 0)


def test_a_renewed_claim_outlives_its_first_lease_and_only_its_owner_renews(store, name):
    store.init({name: 100.0, f"{name}-b": 100.0})
    due = 101_000_000
    mine, other = (name, due), (f"{name}-b", due)
    assert store.claim([mine], "a", lease=0.3) == {mine}
    assert store.claim([other], "b", lease=30) == {other}
    for _ in range(3):  # 0.45 s in all: past the first lease, kept by the renewals
        time.sleep(0.15)
        assert store.extend([mine, other], "a", lease=0.3) == {mine}
    assert store.claim([mine], "c", lease=30) == set()
    time.sleep(0.45)  # no more renewals: the lease runs out and another beat takes it
    assert store.claim([mine], "c", lease=30) == {mine}
    assert store.extend([mine], "a", lease=30) == set()  # not "a"'s any more
    store.complete([(name, due, 101.0)])
    assert store.extend([mine], "c", lease=30) == set()  # sent: nothing to keep


def test_an_entry_name_too_long_for_the_store_is_refused_clearly(store, name):
    long = f"{name}-" + "x" * 300
    doc = {"task": "t.x", "schedule": {"every": 5.0}, "args": [], "kwargs": {}, "options": {}}
    if isinstance(store, SQLStore) and store._mysql:
        with pytest.raises(ValueError, match="at most 191 characters"):
            store.put_entry(long, doc)
        assert long not in store.entries()
        return
    store.put_entry(long, doc)
    assert store.entries()[long]["task"] == "t.x"
    assert store.remove_entry(long)
