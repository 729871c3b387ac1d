"""Sphinx configuration: ``sphinx-build -W --keep-going -b html docs docs/_build/html``."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import sqlnotify  # after the path: the checkout is documented, not an install

project = "sqlnotify"
author = "the sqlnotify authors"
copyright = "the sqlnotify authors"
release = sqlnotify.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Every page of the tree is in a toctree; README.rst and benchmarks/README.rst
# are pulled in with ``include`` where they belong.
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
