"""The path of an event: listener -> intake -> dispatcher -> delivery (-> bridge).

One start to one stop is a :class:`~sqlnotify._pipeline.run.Run`; each module
is one stage or one service of it.  Nothing here imports a concrete dialect:
the database is reached through :class:`~sqlnotify.dialects.base.Dialect`.
"""
