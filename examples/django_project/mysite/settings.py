"""Settings of the example project: the database comes from ``DATABASE_URL``."""

import os
import sys

import sqlalchemy as sa

_url = sa.make_url(
    os.environ.get("DATABASE_URL")
    or sys.exit(
        "set DATABASE_URL to a PostgreSQL database,"
        " e.g. postgresql+psycopg2://user:password@localhost/dbname"
    )
)

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["shop.apps.ShopConfig"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.database,
        "USER": _url.username or "",
        "PASSWORD": _url.password or "",
        "HOST": _url.host or "",
        "PORT": str(_url.port or ""),
        # libpq options from the URL's query, e.g. options=-csearch_path=shop
        "OPTIONS": {key: str(value) for key, value in _url.query.items()},
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"sqlnotify": {"handlers": ["console"], "level": "INFO"}},
}
