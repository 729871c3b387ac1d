import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import Order


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    order = Order.objects.create(customer=data["customer"], total_cents=data["total_cents"])
    return JsonResponse({"id": order.id}, status=201)
