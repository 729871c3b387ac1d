"""sqlnotify's benchmark suite: ``python -m benchmarks --help``.

Each case measures sqlnotify and, in the same run, a baseline (the bare
driver doing the least possible work), so the ratios hold on any machine.
"""
