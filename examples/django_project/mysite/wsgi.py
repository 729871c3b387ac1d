"""WSGI entry point: the serving process starts the listener here, once.

``runserver`` loads this module only in the process that serves (not in its
autoreloader's watcher), gunicorn in each worker (or, with ``preload_app``,
in the master: then its ``post_fork`` hook starts the notifier again in each
worker).  Management commands never load it.
"""

import os

from django.apps import apps
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
apps.get_app_config("shop").notifier.start()
