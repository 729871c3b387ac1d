"""What the shop does when an order is committed (on the dispatcher thread)."""

from sqlnotify import ChangeEvent
from sqlnotify.adapters.django import uses_orm

from .models import Invoice


@uses_orm
def invoice_new_order(event: ChangeEvent) -> None:
    Invoice.objects.get_or_create(
        order_id=event.id, defaults={"customer": event.extra_columns["customer"]}
    )
