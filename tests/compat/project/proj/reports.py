from celery.utils.log import get_task_logger

from .celery import app

logger = get_task_logger(__name__)


@app.task(bind=True)
def report(self, name):
    logger.info("report %s", name)
    return (self.request.delivery_info or {}).get("routing_key")
