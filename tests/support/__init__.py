"""Helpers shared by the test folders (importable as ``support``: ``pythonpath = tests``).

``watching`` (tables, ``watched()``), ``pg`` (PostgreSQL models and queries),
``pgserver`` (the throwaway server), ``faults`` (a controllable TCP proxy),
``sqlite`` (SQLite files and helper processes), ``procs`` (child processes),
``cli`` (the command line as a process), ``events``, ``identifiers`` and
``identifier_app`` (the identifier property tests).
"""
