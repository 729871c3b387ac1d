"""The one home of what sqlnotify writes to and reads from Redis: key names, entry fields, script.

A relay appends each event of a durable watch to the stream of its channel
(:func:`stream_key`), with an explicit entry ID ``<n>-0`` where ``n`` counts
the stream's entries from 1 without holes.  Consumer groups then tell a gap
exactly: the group's last delivered ID and the next entry it is given must
be consecutive, or the entries between were trimmed (or lost with a Redis
restart) before the group read them.

========  ================================================================
field     value
========  ================================================================
``p``     the event's payload (JSON text, with its journal ``"pos"``)
``j``     the event's journal position number (``event.position``), so a
          relay taking over writes no event twice; ``0`` in a gap entry
``g``     only in a gap entry, instead of ``p``: the journal lost events
          before the relay read them (retention pruned them); the value is
          the time of the newest lost one (seconds since the epoch).  Each
          consumer group signals a ``"retention"`` gap when it reads it.
========  ================================================================
"""

from __future__ import annotations

__all__ = [
    "BELL_INFIX",
    "BELL_TTL_MS",
    "DEFAULT_PREFIX",
    "FIELD_GAP",
    "FIELD_PAYLOAD",
    "FIELD_POSITION",
    "LEASE_REFRESH_SCRIPT",
    "LEASE_RELEASE_SCRIPT",
    "READ_SCRIPT",
    "RELAY_LOCK_PREFIX",
    "RING_SCRIPT",
    "bell_key",
    "entry_id",
    "entry_number",
    "gap_fields",
    "health_key",
    "health_pattern",
    "lease_key",
    "stream_key",
]

#: Entry field holding the payload.
FIELD_PAYLOAD = "p"
#: Entry field holding the journal position number.
FIELD_POSITION = "j"
#: Entry field of a gap entry: the journal lost events before the relay read them.
FIELD_GAP = "g"
#: Default prefix of stream keys.
DEFAULT_PREFIX = "sqlnotify:"
#: Prefix of the consumer name a relay saves its journal position under.
RELAY_LOCK_PREFIX = "relay:"


def stream_key(prefix: str, channel: str) -> str:
    """The stream of one watch's channel."""
    return f"{prefix}{channel}"


#: What follows a stream's key in the key of a group's bell (see :data:`RING_SCRIPT`).
BELL_INFIX = ":bell:"
#: A bell nobody waits on goes away after this many milliseconds.
BELL_TTL_MS = 60_000


def bell_key(stream: str, group: str) -> str:
    """The list whose element wakes one waiting consumer of ``group`` on ``stream``."""
    return f"{stream}{BELL_INFIX}{group}"


def health_key(prefix: str, name: str, instance: str) -> str:
    """Where one relay process publishes its ``health()`` (JSON, expiring)."""
    return f"{prefix}relay:{name}:{instance}"


def health_pattern(prefix: str) -> str:
    """The ``SCAN`` pattern of every relay's health key under ``prefix``."""
    return f"{prefix}relay:*"


def lease_key(prefix: str, group: str, consumer: str) -> str:
    """The lease a process holds on its consumer name in a group (a token, expiring)."""
    return f"{prefix}lease:{group}:{consumer}"


#: KEYS: the lease; ARGV: this process's token, milliseconds to live.
#: Extends the lease when this process holds it, takes it when nobody does
#: (Redis restarted, or it expired); returns 1 then, 0 when another holds it.
LEASE_REFRESH_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

#: KEYS: the lease; ARGV: this process's token.  Deletes it only when held by the token.
LEASE_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def entry_id(number: int) -> str:
    """The entry ID a relay gives the ``number``-th entry of a stream."""
    return f"{number}-0"


def gap_fields(lost_until: float) -> dict[str, str | int]:
    """The fields of a gap entry (``lost_until``: the newest lost event's time)."""
    return {FIELD_GAP: repr(float(lost_until)), FIELD_POSITION: 0}


def entry_number(entry: str) -> int:
    """The number of an entry ID written by a relay (``"12-0"`` -> 12)."""
    return int(entry.partition("-")[0])


#: KEYS: streams the relay just appended to; ARGV: the bell infix, the
#: bell's lifetime (ms).  Rings each group's bell of each stream: one element
#: (never more), which wakes exactly one consumer of the group waiting in
#: ``BLPOP`` (``XREAD`` would wake every waiting consumer of every group).
RING_SCRIPT = """
for _, key in ipairs(KEYS) do
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', key)
  if ok then
    for _, g in ipairs(groups) do
      for j = 1, #g, 2 do
        if g[j] == 'name' then
          local bell = key .. ARGV[1] .. g[j + 1]
          redis.call('LPUSH', bell, 1)
          redis.call('LTRIM', bell, 0, 0)
          redis.call('PEXPIRE', bell, ARGV[2])
        end
      end
    end
  end
end
return 0
"""

#: KEYS: streams; ARGV: group, consumer, count, the bell infix, the bell's
#: lifetime (ms).  For each stream, atomically: the group's last delivered
#: ID, then ``XREADGROUP ... >`` (never blocking); a read that filled its
#: count rings the group's bell again, so another waiting consumer shares
#: the rest.  Raises ``NOGROUP <key>`` when the stream or the group is missing.
READ_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local last = false
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', key)
  if not ok then return redis.error_reply('NOGROUP ' .. key) end
  for _, g in ipairs(groups) do
    local name, ld = nil, nil
    for j = 1, #g, 2 do
      if g[j] == 'name' then name = g[j + 1] end
      if g[j] == 'last-delivered-id' then ld = g[j + 1] end
    end
    if name == ARGV[1] then last = ld end
  end
  if not last then return redis.error_reply('NOGROUP ' .. key) end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                       'STREAMS', key, '>')
  local entries = r and r[1][2] or {}
  if #entries >= tonumber(ARGV[3]) then
    local bell = key .. ARGV[4] .. ARGV[1]
    redis.call('LPUSH', bell, 1)
    redis.call('LTRIM', bell, 0, 0)
    redis.call('PEXPIRE', bell, ARGV[5])
  end
  out[i] = {last, entries}
end
return out
"""
