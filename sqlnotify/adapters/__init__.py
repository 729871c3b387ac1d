"""Framework adapters: Flask, Django and Celery.

Each module imports its framework, so import the one you use
(``sqlnotify.adapters.flask``, ``.django``, ``.celery``); importing this
package imports none of them.
"""
