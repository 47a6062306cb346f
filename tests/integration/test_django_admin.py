"""fastq's Django admin through Django's test client: the task results list with its
filters and search, and the dead letters of a Redis broker, whose "retry" action puts a
letter back on its queue, where a real worker process runs it."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conftest import WorkerProcess
from tests.integration.redis_support import REDIS_URL, redis_prefix  # noqa: F401

# not twin_neutral: a worker process runs the retried task through the consumer loop
pytestmark = pytest.mark.integration

pytest.importorskip("django")

RESULTS = "/admin/fastq/taskresult/"
DEAD_LETTERS = "/admin/fastq/deadletter/"


@pytest.fixture
def admin_client(django_databases):
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_superuser(f"admin-{uuid.uuid4().hex[:8]}", password="x")
    client = Client()
    client.force_login(user)
    yield client
    user.delete()


@pytest.fixture
def redis_app(redis_prefix):  # noqa: F811 - the fixture imported above
    """The current fastq App: a broker of this test's own keys on Redis, results in the
    Django project's database."""
    from fastq import App

    app = App("admin-tests", broker=f"{REDIS_URL}?global_keyprefix={redis_prefix}",
              backend="django-db://")
    yield app
    app.close()


def _listed(response, task_ids: list[str]) -> set[str]:
    assert response.status_code == 200, response.content[:500]
    page = response.content.decode()
    return {task_id for task_id in task_ids if task_id in page}


def test_task_results_list_filters_by_state_and_name_and_searches_by_id(admin_client):
    from fastq.backends import create_backend

    backend = create_backend("django-db://")
    done, failed, other = (str(uuid.uuid4()) for _ in range(3))
    backend.store(done, "SUCCESS", 5, extra={"name": "shop.total"})
    backend.store(failed, "FAILURE", ValueError("closed"), extra={"name": "shop.refuse"})
    backend.store(other, "SUCCESS", 1, extra={"name": "shop.database"})
    ids = [done, failed, other]

    assert _listed(admin_client.get(RESULTS), ids) == set(ids)
    assert _listed(admin_client.get(RESULTS, {"state__exact": "FAILURE"}), ids) == {failed}
    assert _listed(admin_client.get(RESULTS, {"name__exact": "shop.total"}), ids) == {done}
    assert _listed(admin_client.get(RESULTS, {"q": done}), ids) == {done}
    detail = admin_client.get(f"{RESULTS}{done}/change/")
    assert detail.status_code == 200 and b"shop.total" in detail.content
    assert admin_client.get(f"{RESULTS}add/").status_code == 403


def _dead_letter(app, queue: str, prices: list[int], reason: str) -> str:
    """Send shop.total to ``queue`` and dead-letter it as a worker that gives up would."""
    result = app.send_task("shop.total", (prices,), queue=queue)
    (delivery,) = app.broker.fetch([queue], 1, 5)
    app.broker.dead_letter(delivery.tag, reason)
    return result.id


def _row_pk(task_id: str) -> int:
    from fastq.contrib.django.models import DeadLetter

    return DeadLetter.objects.get(task_id=task_id).pk


def test_dead_letters_list_filters_and_retry_runs_the_task(
        admin_client, redis_app, sqlite_env, django_databases):
    queue, elsewhere = (f"admin-{uuid.uuid4().hex[:8]}" for _ in range(2))
    retried = _dead_letter(redis_app, queue, [1, 2, 3], "rejected")
    stays = _dead_letter(redis_app, elsewhere, [4], "no such task")
    ids = [retried, stays]

    assert _listed(admin_client.get(DEAD_LETTERS), ids) == set(ids)
    assert _listed(admin_client.get(DEAD_LETTERS, {"queue__exact": queue}), ids) == {retried}
    assert _listed(admin_client.get(DEAD_LETTERS, {"reason__exact": "no such task"}),
                   ids) == {stays}
    assert _listed(admin_client.get(DEAD_LETTERS, {"q": stays}), ids) == {stays}

    response = admin_client.post(DEAD_LETTERS, {
        "action": "retry", "index": 0, "_selected_action": [_row_pk(retried)]}, follow=True)
    assert "1 dead letter(s) published to their queue again" in response.content.decode()
    assert redis_app.broker.dead_letters(queue) == []
    assert [letter["headers"]["id"] for letter in redis_app.broker.dead_letters(elsewhere)] \
        == [stays]
    assert _listed(admin_client.get(DEAD_LETTERS), ids) == {stays}

    tmp_path, _url, run_log, env = sqlite_env
    env.update(django_databases, FASTQ_BROKER_URL=redis_app.broker_url,
               FASTQ_RESULT_BACKEND="django-db://")
    worker = DjangoAdminWorker(tmp_path, redis_app.broker_url, run_log, env)
    try:
        worker.start("-Q", queue, "-P", "solo")
        try:
            value = redis_app.AsyncResult(retried).get(timeout=30)
        except TimeoutError:
            pytest.fail(f"the retried task did not finish; worker log:\n{worker.log()}")
        assert value == 6
    finally:
        worker.stop()


def test_retrying_a_letter_retried_elsewhere_says_it_is_gone(admin_client, redis_app):
    queue = f"admin-{uuid.uuid4().hex[:8]}"
    task_id = _dead_letter(redis_app, queue, [1], "rejected")
    assert _listed(admin_client.get(DEAD_LETTERS), [task_id]) == {task_id}
    assert redis_app.broker.retry_dead_letter(queue, task_id)  # another admin was quicker

    response = admin_client.post(DEAD_LETTERS, {
        "action": "retry", "index": 0, "_selected_action": [_row_pk(task_id)]}, follow=True)
    page = response.content.decode()
    assert "1 dead letter(s) were no longer in the broker" in page
    assert "published to their queue" not in page
    (delivery,) = redis_app.broker.fetch([queue], 10, 5)  # published once, not twice
    assert delivery.headers["id"] == task_id
    redis_app.broker.ack_many([delivery.tag])


class DjangoAdminWorker(WorkerProcess):
    app_module = "tests.apps.django_app"


def test_retry_is_offered_only_to_users_who_may_delete_dead_letters(django_databases, redis_app):
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    # the admin shows its actions only above a list with rows in it
    _dead_letter(redis_app, f"admin-{uuid.uuid4().hex[:8]}", [1], "rejected")
    viewer = User.objects.create_user(f"viewer-{uuid.uuid4().hex[:8]}", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client = Client()
    client.force_login(viewer)
    try:
        page = client.get(DEAD_LETTERS)
        assert page.status_code == 200
        assert "Retry: publish to their queue again" not in page.content.decode()
        viewer.user_permissions.add(Permission.objects.get(codename="delete_deadletter"))
        viewer = User.objects.get(pk=viewer.pk)  # permissions are cached per user object
        client.force_login(viewer)
        assert "Retry: publish to their queue again" in client.get(DEAD_LETTERS).content.decode()
    finally:
        viewer.delete()
