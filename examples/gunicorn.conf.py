"""gunicorn settings for examples/gunicorn_app.py: preload the app, listen per worker."""

preload_app = True
workers = 2


def post_fork(server, worker):
    # Runs in the new worker.  Had the master started the notifier, the
    # worker's copy is stopped here and start() gives it its own listener.
    from gunicorn_app import engine, notifier

    engine.dispose(close=False)  # the master's pooled connections stay the master's
    notifier.start()
    server.log.info("sqlnotify listening in worker %s", worker.pid)


def worker_exit(server, worker):
    from gunicorn_app import notifier

    notifier.stop()
