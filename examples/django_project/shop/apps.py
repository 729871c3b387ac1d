from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Configure only: Django runs ready() for every management command.
        # The serving process starts the listener (see mysite/wsgi.py).
        from sqlnotify import Notifier
        from sqlnotify.adapters.django import create_engine, watch_model

        from .models import Order
        from .receivers import invoice_new_order

        self.notifier = Notifier(create_engine())
        table = watch_model(self.notifier, Order, "insert", extra_columns=["customer"])
        self.notifier.subscribe(table, "insert")(invoice_new_order)
