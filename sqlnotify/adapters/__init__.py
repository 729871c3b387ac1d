"""Glue between a :class:`~sqlnotify.Notifier` and application frameworks.

Each adapter lives in its own module and imports its framework only when
used, so importing :mod:`sqlnotify.adapters` costs nothing:

- :mod:`sqlnotify.adapters.asgi`: FastAPI, Starlette and any ASGI server's
  lifespan.
- :mod:`sqlnotify.adapters.flask`: the ``SQLNotify`` Flask extension.
- :mod:`sqlnotify.adapters.django`: an engine from ``settings.DATABASES``,
  watches by model.
- :mod:`sqlnotify.adapters.celery`: listeners in Celery worker processes.
"""

from __future__ import annotations

__all__: list[str] = []
