"""What nodes of one service keep in Redis and say to each other: key names, records, the Lua scripts.

Pure: no sockets, no clock. ``cluster.py`` runs these scripts; the unit tests pin the formats with
golden vectors (tests/unit/test_cluster_wire.py).

Pattern (as LiveKit runs several nodes on Redis): a room lives on one node, chosen by rendezvous
hashing over the live nodes; Redis holds who is where and carries what must cross nodes.

Keys (``P`` is the prefix, ``kbz:`` by default):

* ``P node:<node>`` – the node's info (JSON), set with a short expiry by every heartbeat; the set
  ``P nodes`` lists node ids, and a heartbeat drops the ones whose key expired. A node whose key
  is gone is dead for everyone: its ids are free and its rooms move.
* ``P id:<peer id>`` – ``"<node> <epoch> <token hash>"``: which node holds a broker id. Each claim
  bumps the epoch, the fencing token: releases and lease refreshes only act when node *and* epoch
  still match, so a node that lost an id (taken over elsewhere, or given away while it looked dead)
  can neither keep it nor delete the new owner's record. Tokens are stored hashed.
* ``P q:<peer id>`` – a list of ``src NUL body`` for an id that is nowhere online (the offline
  queue, as on one node); a claim pops it atomically with taking the id.
* ``P ch:<node>`` – the node's pub/sub channel. One PUBLISH carries a batch:
  ``<from node> SOH record SOH record …``; a record is fields joined by NUL:
  ``M<q|n|d> dst src body`` (a signaling frame; ``q`` = may be queued if dst is gone, ``d`` = the
  broker's LEAVE for ``src``, which went away),
  ``K id epoch`` (your copy of ``id`` is older than ``epoch``: close it, no LEAVE),
  ``C id epoch contact…`` (contacts of an id that moved to you, for LEAVE on its departure).
  Ids never contain NUL or SOH (the PeerJS id pattern), and a body is JSON the broker parsed, so
  it cannot either (JSON forbids raw control characters).
* ``P b:<node>:<seq>`` – the result of route batch ``seq``, so a batch re-sent after a lost reply
  is not published twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SEP = b"\x00"
REC = b"\x01"
DEFAULT_PREFIX = "kbz:"


def token_hash(token: str) -> str:
    """What Redis stores instead of a PeerJS token: enough to compare, useless to replay."""
    return hashlib.sha256(b"kibitz-broker-token\x00" + token.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class IdRecord:
    node: str
    epoch: int
    token: str

    def encode(self) -> bytes:
        return f"{self.node} {self.epoch} {self.token}".encode()

    @staticmethod
    def decode(raw: bytes | None) -> IdRecord | None:
        if not raw:
            return None
        parts = raw.split(b" ")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return IdRecord(parts[0].decode(), int(parts[1]), parts[2].decode())


@dataclass(frozen=True)
class Message:
    """A signaling frame for ``dst``; ``body`` already carries ``src`` (as relayed on one node)."""

    dst: str
    src: str
    body: bytes
    queueable: bool
    #: The broker's own LEAVE for an id that went away: the receiver forgets it as a contact.
    departure: bool = False


@dataclass(frozen=True)
class Kick:
    id: str
    epoch: int


@dataclass(frozen=True)
class Contacts:
    id: str
    epoch: int
    contacts: tuple[str, ...]


Record = Message | Kick | Contacts


def encode_batch(from_node: str, records: list[Record]) -> bytes:
    """One channel payload (what the Lua scripts build for messages, and Python for the rest)."""
    parts = [from_node.encode()]
    for r in records:
        if isinstance(r, Message):
            head = b"Mq" if r.queueable else b"Md" if r.departure else b"Mn"
            parts.append(SEP.join((head, r.dst.encode(), r.src.encode(), r.body)))
        elif isinstance(r, Kick):
            parts.append(SEP.join((b"K", r.id.encode(), str(r.epoch).encode())))
        else:
            fields = (b"C", r.id.encode(), str(r.epoch).encode(), *(c.encode() for c in r.contacts))
            parts.append(SEP.join(fields))
    return REC.join(parts)


def decode_batch(payload: bytes) -> tuple[str, list[Record], int]:
    """``(from node, records, malformed count)``; a malformed record is skipped, never raised."""
    chunks = payload.split(REC)
    from_node = chunks[0].decode("utf-8", "replace")
    out: list[Record] = []
    bad = 0
    for chunk in chunks[1:]:
        kind = chunk[:1]
        try:
            if kind == b"M":
                head, dst, src, body = chunk.split(SEP, 3)
                if head not in (b"Mq", b"Mn", b"Md"):
                    raise ValueError(head)
                out.append(Message(dst.decode(), src.decode(), body, head == b"Mq", head == b"Md"))
            elif kind == b"K":
                _, id_, epoch = chunk.split(SEP)
                out.append(Kick(id_.decode(), int(epoch)))
            elif kind == b"C":
                _, id_, epoch, *contacts = chunk.split(SEP)
                out.append(Contacts(id_.decode(), int(epoch), tuple(c.decode() for c in contacts)))
            else:
                bad += 1
        except (ValueError, UnicodeDecodeError):
            bad += 1
    return from_node, out, bad


def queue_value(src: str, body: bytes) -> bytes:
    return src.encode() + SEP + body


def split_queue_value(value: bytes) -> tuple[str, bytes] | None:
    src, sep, body = value.partition(SEP)
    if not sep:
        return None
    try:
        return src.decode(), body
    except UnicodeDecodeError:
        return None


# ------------------------------------------------------------------------------------------------
# Lua scripts. ARGV[1] is always the key prefix. Redis runs each atomically.
# ------------------------------------------------------------------------------------------------

#: Heartbeat + live set in one round trip. ARGV: prefix, node, info, ttl_ms.
#: Returns {existed (0/1), node1, info1, node2, info2, ...} over the live nodes.
BEAT = r"""
local P, node = ARGV[1], ARGV[2]
local nk = P .. 'node:' .. node
local existed = redis.call('EXISTS', nk)
redis.call('SET', nk, ARGV[3], 'PX', ARGV[4])
redis.call('SADD', P .. 'nodes', node)
local out = {existed}
for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  local v = redis.call('GET', P .. 'node:' .. n)
  if v then
    out[#out + 1] = n
    out[#out + 1] = v
  else
    redis.call('SREM', P .. 'nodes', n)
  end
end
return out
"""

#: Claim a broker id. ARGV: prefix, id, node, token hash, lease_ms, local_free (1: this node holds
#: no live socket for the id, so a record naming this node is stale).
#: Returns {'taken', owner} or {'open', epoch, previous live owner or '', queued values...}.
#: A previous owner on another node is told (K) to close its copy.
CLAIM = r"""
local P, id, node, tok = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = P .. 'id:' .. id
local rec = redis.call('GET', k)
local epoch, prev = 1, ''
if rec then
  local owner, e, t = string.match(rec, '^(%S+) (%d+) (%S+)$')
  if owner then
    local alive = redis.call('EXISTS', P .. 'node:' .. owner) == 1
    if alive and owner == node and ARGV[6] == '1' then alive = false end
    if alive and t ~= tok then return {'taken', owner} end
    epoch = tonumber(e) + 1
    if alive then prev = owner end
  end
end
redis.call('SET', k, node .. ' ' .. epoch .. ' ' .. tok, 'PX', ARGV[5])
local out = {'open', epoch, prev}
local qk = P .. 'q:' .. id
local q = redis.call('LRANGE', qk, 0, -1)
if #q > 0 then redis.call('DEL', qk) end
for i = 1, #q do out[#out + 1] = q[i] end
if prev ~= '' and prev ~= node then
  redis.call('PUBLISH', P .. 'ch:' .. prev, node .. '\1K\0' .. id .. '\0' .. epoch)
end
return out
"""

#: Release ids this node held. ARGV: prefix, node, then pairs (id, epoch). Returns how many went.
RELEASE = r"""
local P, node, n = ARGV[1], ARGV[2], 0
for i = 3, #ARGV, 2 do
  local k = P .. 'id:' .. ARGV[i]
  local owner, e = string.match(redis.call('GET', k) or '', '^(%S+) (%d+) ')
  if owner == node and e == ARGV[i + 1] then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
"""

#: Keep (or, after Redis lost its data, put back) the records of the ids this node holds.
#: ARGV: prefix, node, lease_ms, then triples (id, epoch, token hash). Returns one char per id:
#: 'k' kept, 's' lost to the same token elsewhere (a takeover), 't' lost to another token.
REFRESH = r"""
local P, node, lease = ARGV[1], ARGV[2], ARGV[3]
local st = {}
for i = 4, #ARGV, 3 do
  local k = P .. 'id:' .. ARGV[i]
  local mine = node .. ' ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2]
  local rec = redis.call('GET', k)
  if not rec then
    redis.call('SET', k, mine, 'PX', lease)
    st[#st + 1] = 'k'
  elseif rec == mine then
    redis.call('PEXPIRE', k, lease)
    st[#st + 1] = 'k'
  elseif string.match(rec, '(%S+)$') == ARGV[i + 2] then
    st[#st + 1] = 's'
  else
    st[#st + 1] = 't'
  end
end
return table.concat(st)
"""

#: Deliver a batch of frames to the nodes holding their destinations, or queue them.
#: ARGV: prefix, node, batch seq, per-id queue limit, queue ttl_ms, then quads (dst, src, body,
#: mode). mode: 'q' queue if offline, 'n' drop if offline, 'd' the broker's LEAVE for a departed
#: id (dropped if offline; the receiver forgets the contact); 'Q'/'N'/'D' the same but never route
#: to this node (a frame that came back here for an id we no longer hold). The record's head is
#: 'M' + the mode in lower case.
#: Returns one char per frame: 'd' published, 'q' queued, 'f' queue full, 'x' dropped (offline).
ROUTE = r"""
local P, node = ARGV[1], ARGV[2]
local mk = P .. 'b:' .. node .. ':' .. ARGV[3]
local done = redis.call('GET', mk)
if done then return done end
local limit, qttl = tonumber(ARGV[4]), ARGV[5]
local alive, out, order, st = {}, {}, {}, {}
for i = 6, #ARGV, 4 do
  local dst, src, body, mode = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local owner = nil
  local rec = redis.call('GET', P .. 'id:' .. dst)
  if rec then
    local o = string.match(rec, '^(%S+) ')
    if o and not (o == node and mode == string.upper(mode)) then
      local a = alive[o]
      if a == nil then
        a = redis.call('EXISTS', P .. 'node:' .. o) == 1
        alive[o] = a
      end
      if a then owner = o end
    end
  end
  local m = string.lower(mode)
  local q = (m == 'q')
  if owner then
    local list = out[owner]
    if not list then
      list = {node}
      out[owner] = list
      order[#order + 1] = owner
    end
    list[#list + 1] = 'M' .. m .. '\0' .. dst .. '\0' .. src .. '\0' .. body
    st[#st + 1] = 'd'
  elseif q then
    local qk = P .. 'q:' .. dst
    if redis.call('LLEN', qk) < limit then
      redis.call('RPUSH', qk, src .. '\0' .. body)
      redis.call('PEXPIRE', qk, qttl)
      st[#st + 1] = 'q'
    else
      st[#st + 1] = 'f'
    end
  else
    st[#st + 1] = 'x'
  end
end
for _, o in ipairs(order) do
  redis.call('PUBLISH', P .. 'ch:' .. o, table.concat(out[o], '\1'))
end
local s = table.concat(st)
redis.call('SET', mk, s, 'PX', 60000)
return s
"""

#: Take back queued frames that nobody claimed in time. ARGV: prefix, then pairs (dst, value).
#: Returns one char per pair: '1' it was still queued (so it expired: tell the sender), '0' not.
UNQUEUE = r"""
local P, st = ARGV[1], {}
for i = 2, #ARGV, 2 do
  st[#st + 1] = tostring(redis.call('LREM', P .. 'q:' .. ARGV[i], 1, ARGV[i + 1]))
end
return table.concat(st)
"""
