"""Django: a real project (examples/django_project) saving models through the ORM.

Django's settings are process-wide, so the project runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import sqlalchemy as sa
from support.procs import ROOT, Proc, child_env

from sqlnotify.adapters.django import database_url
from sqlnotify.exceptions import (
    SQLNotifyConfigurationError,
    SQLNotifyUnSupportedDatabaseProviderError,
)

PROJECT = os.path.join(ROOT, "examples", "django_project")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import django
    os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    django.setup()
    from django.apps import apps
    from django.core.management import call_command
    from django.db import transaction
    from django.test import Client
    from sqlnotify import Notifier, SQLNotifyConfigurationError
    from sqlnotify.adapters.django import watch_model
    from sqlnotify.testing import wait_until
    from shop.models import Invoice, Order

    call_command("migrate", verbosity=0)
    notifier = apps.get_app_config("shop").notifier
    print("before wsgi running", notifier.is_running, flush=True)
    import mysite.wsgi  # the serving process's entry point starts the listener
    print("after wsgi running", notifier.is_running, flush=True)

    response = Client().post(
        "/orders", json.dumps({"customer": "ada", "total_cents": 4200}),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    with transaction.atomic():
        grace = Order.objects.create(customer="grace", total_cents=100)
    ids = sorted([response.json()["id"], grace.id])
    wait_until(lambda: Invoice.objects.count() >= 2, 20, "two invoices")
    invoices = sorted(Invoice.objects.values_list("order_id", "customer"))
    print("result", json.dumps({"ids": ids, "invoices": invoices}), flush=True)

    import sqlalchemy as sa
    big = Notifier(notifier.db_engine)
    watch_model(
        big, Order, "update", durable=True, include_old=True,
        where=sa.column("total_cents") > 1000,
    )
    (watch,) = big.prepare()
    print("watch", json.dumps([watch.durable, watch.include_old, watch.condition is not None]))
    print("when", any("1000" in s and "WHEN" in s for s in big.ddl()), flush=True)

    try:
        watch_model(Notifier(notifier.db_engine), Order, "update", extra_columns=["price"])
    except SQLNotifyConfigurationError as exc:
        print("error", exc, flush=True)
    notifier.stop()
    """
)


@pytest.mark.postgresql
def test_a_model_saved_through_the_orm_reaches_the_receiver(pg_url: str, schema: str) -> None:
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    env = child_env(DATABASE_URL=url.render_as_string(hide_password=False))
    env["PYTHONPATH"] = os.pathsep.join([PROJECT, env["PYTHONPATH"]])
    proc, code = Proc.run("-c", SCRIPT, env=env, cwd=PROJECT, timeout=90)
    assert code == 0, proc.output
    assert "before wsgi running False" in proc.lines, proc.output
    assert "after wsgi running True" in proc.lines, proc.output
    result = json.loads(proc.expect("result ", 1)[len("result ") :])
    assert result["invoices"] == [[result["ids"][0], "ada"], [result["ids"][1], "grace"]]
    assert json.loads(proc.expect("watch ", 1)[len("watch ") :]) == [True, True, True]
    assert "when True" in proc.lines, proc.output
    error = proc.expect("error ", 1)
    assert "shop.Order has no field 'price'" in error and "'customer'" in error
    assert "Traceback" not in proc.output


def test_postgres_settings_become_a_psycopg2_url() -> None:
    url = database_url(
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "shop",
            "USER": "app",
            "PASSWORD": "s3cret/:@",
            "HOST": "db.internal",
            "PORT": "6432",
            "OPTIONS": {"sslmode": "require", "options": "-csearch_path=x", "pool": True},
        }
    )
    assert url.drivername == "postgresql+psycopg2"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "app",
        "s3cret/:@",
        "db.internal",
        6432,
        "shop",
    )
    assert dict(url.query) == {"sslmode": "require", "options": "-csearch_path=x"}


def test_a_socket_directory_host_goes_to_the_query() -> None:
    url = database_url(
        {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "HOST": "/run/postgresql"}
    )
    assert url.host is None and url.query["host"] == "/run/postgresql"


def test_sqlite_settings_become_a_file_url(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(os.fspath(tmp_path), "db.sqlite3")
    url = database_url({"ENGINE": "django.db.backends.sqlite3", "NAME": path})
    assert url.drivername == "sqlite" and url.database == path
    with pytest.raises(SQLNotifyConfigurationError, match="in-memory"):
        database_url({"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}, "mem")


def test_other_backends_are_refused_by_name() -> None:
    with pytest.raises(
        SQLNotifyUnSupportedDatabaseProviderError, match=r"django\.db\.backends\.oracle"
    ):
        database_url({"ENGINE": "django.db.backends.oracle", "NAME": "x"}, "legacy")


def test_mysql_settings_become_a_pymysql_url() -> None:
    url = database_url(
        {
            "ENGINE": "django.db.backends.mysql",
            "NAME": "shop",
            "USER": "app",
            "PASSWORD": "s3cret/:@",
            "HOST": "db.internal",
            "PORT": "3307",
            "OPTIONS": {"charset": "utf8mb4", "init_command": "SET sql_mode='STRICT_ALL_TABLES'"},
        }
    )
    assert url.drivername == "mysql+pymysql"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "app",
        "s3cret/:@",
        "db.internal",
        3307,
        "shop",
    )
    assert dict(url.query) == {"charset": "utf8mb4"}
    socket = database_url(
        {"ENGINE": "django.db.backends.mysql", "NAME": "shop", "HOST": "/run/mysqld/mysqld.sock"}
    )
    assert socket.query["unix_socket"] == "/run/mysqld/mysqld.sock"
    with pytest.raises(SQLNotifyConfigurationError, match="read_default_file"):
        database_url(
            {"ENGINE": "django.db.backends.mysql", "OPTIONS": {"read_default_file": "/my.cnf"}}
        )


MYSQL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import pymysql
    pymysql.install_as_MySQLdb()  # Django's mysql backend on PyMySQL (no mysqlclient here)
    import django
    from django.conf import settings
    url = json.loads(sys.argv[1])
    settings.configure(DATABASES={"default": {
        "ENGINE": "django.db.backends.mysql", "NAME": url["database"], "USER": url["username"],
        "PASSWORD": url["password"] or "", "HOST": url["host"], "PORT": str(url["port"]),
    }})
    django.setup()
    import sqlalchemy as sa
    from django.db import connection, transaction
    from sqlnotify import Notifier
    from sqlnotify.adapters.django import create_engine
    from sqlnotify.testing import EventRecorder

    with connection.cursor() as cur:
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40)) ENGINE=InnoDB")
    engine = create_engine()
    print("driver", engine.url.drivername, flush=True)
    table = sa.Table("orders", sa.MetaData(), autoload_with=engine)
    notifier = Notifier(engine)
    notifier.watch(table, "insert", extra_columns=["customer"])
    recorder = EventRecorder()
    notifier.subscribe(table, "insert")(recorder)
    with notifier:
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("INSERT INTO orders VALUES (7, 'ada')")
        (event,) = recorder.wait_for(1, 20)
        print("result", json.dumps([event.id, event.row["customer"]]), flush=True)
    """
)


def test_a_mysql_database_of_django_reaches_the_receiver(mysql_engine: sa.Engine) -> None:
    u = mysql_engine.url
    spec = {
        "database": u.database,
        "username": u.username,
        "password": u.password,
        "host": u.host,
        "port": u.port or 3306,
    }
    proc, code = Proc.run("-c", MYSQL_SCRIPT, json.dumps(spec), env=child_env(), timeout=90)
    assert code == 0, proc.output
    assert "driver mysql+pymysql" in proc.lines, proc.output
    assert json.loads(proc.expect("result ", 1)[len("result ") :]) == [7, "ada"]
