"""A Flask app whose receivers react to committed inserts, wherever they come from.

Run it (PostgreSQL URL in ``DATABASE_URL``)::

    DATABASE_URL=postgresql+psycopg2://user@localhost/dbname \\
        flask --app examples.flask_app run
    curl -X POST localhost:5000/users -H 'content-type: application/json' -d '{"name": "ada"}'
    curl localhost:5000/welcomed

The listener starts before the first request the serving process handles:
not in the reloader's watcher process, not in ``flask shell``.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import sqlalchemy as sa
from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlnotify import ChangeEvent
from sqlnotify.adapters.flask import SQLNotify, in_app_context


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
sqlnotify = SQLNotify()


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "flask_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("DATABASE_URL")
    app.config.update(config or {})
    if not app.config["SQLALCHEMY_DATABASE_URI"]:
        raise SystemExit(
            "set DATABASE_URL to a PostgreSQL database,"
            " e.g. postgresql+psycopg2://user:password@localhost/dbname"
        )
    db.init_app(app)
    with app.app_context():
        db.create_all()
    sqlnotify.init_app(app)
    welcomed: deque[str] = deque(maxlen=100)
    app.extensions["welcomed"] = welcomed

    notifier = sqlnotify.get_notifier(app)
    notifier.watch(User, "insert")

    # The usual blinker idiom; weak=False because this function lives in create_app.
    @notifier.signal(User, "insert").connect_via(User, weak=False)
    @in_app_context(app)
    def welcome(sender: type[User], event: ChangeEvent) -> None:
        # The dispatcher thread, inside an app context: db.session works here.
        user = db.session.get(User, event.id)
        welcomed.append(user.name if user is not None else f"#{event.id} (gone)")

    @app.post("/users")
    def create_user() -> Any:
        user = User(name=request.get_json()["name"])
        db.session.add(user)
        db.session.commit()
        return jsonify(id=user.id), 201

    @app.get("/welcomed")
    def list_welcomed() -> Any:
        return jsonify(list(welcomed))

    return app


if __name__ == "__main__":
    create_app().run(debug=True)
