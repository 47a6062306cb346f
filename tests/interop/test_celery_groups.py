"""Saved groups cross between fastq and a real Celery 5.7 on Redis, in both directions."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator

import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis

pytest.importorskip("celery")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.twin_neutral,  # groups in Redis: no compiled twin
    # Celery 5.7's redis backend still calls redis-py's deprecated setex
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
    # Celery's AsyncResult.__del__ unsubscribes on a pub/sub connection of its own that
    # Celery never closes; fastq's sockets are checked by every other test
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def apps() -> Iterator[tuple]:
    """A fastq app and a Celery app sharing one Redis result store, under a test prefix."""
    require_redis()
    from celery import Celery

    prefix = f"fastqtest:{uuid.uuid4().hex[:10]}:"
    fastq_app = App("groups", broker=f"memory://{uuid.uuid4()}", result_backend=REDIS_URL,
                    result_backend_transport_options={"global_keyprefix": prefix})
    celery_app = Celery("groups", broker="memory://", backend=REDIS_URL)
    celery_app.conf.result_backend_transport_options = {"global_keyprefix": prefix}
    try:
        yield fastq_app, celery_app
    finally:
        fastq_app.close()
        # Celery's results unsubscribe in __del__ (reconnecting if need be): collect the
        # test's now, then close the pub/sub connection they used
        gc.collect()
        celery_app.backend.result_consumer.stop()
        celery_app.close()
        delete_keys(prefix + "*")


def test_celery_saves_fastq_restores_and_joins(apps) -> None:
    fastq_app, celery_app = apps
    from celery.result import AsyncResult as CeleryAsyncResult
    from celery.result import GroupResult as CeleryGroupResult

    ids = [str(uuid.uuid4()) for _ in range(3)]
    group_id = str(uuid.uuid4())
    saved = CeleryGroupResult(group_id, [CeleryAsyncResult(t, app=celery_app) for t in ids],
                              app=celery_app).save()
    del saved
    for n, task_id in enumerate(ids):
        celery_app.backend.store_result(task_id, n * 10, "SUCCESS")
    restored = fastq_app.GroupResult.restore(group_id)
    assert restored is not None and [r.id for r in restored] == ids
    assert restored.join(timeout=5) == [0, 10, 20] and restored.completed_count() == 3


def test_fastq_saves_celery_restores_and_joins(apps) -> None:
    fastq_app, celery_app = apps
    ids = [str(uuid.uuid4()) for _ in range(3)]
    saved = fastq_app.GroupResult(str(uuid.uuid4()),
                                  [fastq_app.AsyncResult(t) for t in ids]).save()
    for n, task_id in enumerate(ids):
        fastq_app.backend.store(task_id, "SUCCESS", n + 1)
    restored = celery_app.GroupResult.restore(saved.id)
    assert restored is not None and [r.id for r in restored.results] == ids
    assert restored.join(timeout=5) == [1, 2, 3]
    assert restored.completed_count() == 3
