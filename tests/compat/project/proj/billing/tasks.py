from celery import shared_task


@shared_task(bind=True)
def charge(self, amount):
    return {"amount": amount, "queue": (self.request.delivery_info or {}).get("routing_key")}
