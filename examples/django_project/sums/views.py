"""POST /sums?x=&y= sends ``sums.add``; GET /sums/<task_id>?wait= reads its result."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from fastq.exceptions import ResultTimeout

from .tasks import add


@csrf_exempt  # an API called by scripts, with no session to protect
@require_POST
def send_sum(request: HttpRequest) -> JsonResponse:
    result = add.delay(int(request.GET["x"]), int(request.GET["y"]))
    return JsonResponse({"task_id": result.id})


@require_GET
def read_sum(request: HttpRequest, task_id: str) -> JsonResponse:
    wait = float(request.GET.get("wait", 10))
    try:
        value = add.AsyncResult(task_id).get(timeout=wait)
    except ResultTimeout:
        return JsonResponse({"error": f"task {task_id} not done after {wait} s"}, status=504)
    return JsonResponse({"task_id": task_id, "value": value})
