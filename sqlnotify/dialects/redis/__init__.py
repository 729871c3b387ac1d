"""Redis Streams: a relay writes the journal of durable watches into them, notifiers read them.

Needs redis-py: the ``redis`` extra (``python -m pip install ".[redis]"`` in a clone).
"""

from __future__ import annotations

from .commands import DEFAULT_PREFIX, stream_key
from .dialect import RedisStreams
from .source import Ledger, RedisAcks, RedisSource

__all__ = ["DEFAULT_PREFIX", "Ledger", "RedisAcks", "RedisSource", "RedisStreams", "stream_key"]
