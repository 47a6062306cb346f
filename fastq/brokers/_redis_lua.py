"""The Lua scripts of the Redis broker: claim with lease, settle, extend; keys documented here.

Keys (``P`` = the ``global_keyprefix`` option, empty by default, as in kombu)::

    P<queue>                    LIST   kombu's queue, priority band 0: producers LPUSH,
    P<queue>\\x06\\x16<step>       LIST   consumers take from the right (RPOP)
    Pfastq:held                 HASH   delivery_tag -> envelope, exactly as it was claimed
    Pfastq:owners               HASH   delivery_tag -> "<owner token>\\t<band key, no P>"
    Pfastq:leases               ZSET   delivery_tag scored by lease expiry (server clock, s)
    Pfastq:delayed:<band key>   ZSET   envelope scored by due time (unix seconds)
    Pfastq:dead:<queue>         LIST   dead-letter records, newest at the head, capped, TTL

kombu's own ``unacked``/``unacked_index``/``unacked_mutex`` are never touched, so a Celery
worker's ``restore_visible`` on the same DB neither sees nor restores fastq's claims.

A redelivery is counted in the envelope itself as a top-level ``"fastq-redeliveries": N``
member, put first. Lua's cjson would re-encode the whole envelope (turning ``[]`` into
``{}``, rounding numbers), so the counter is edited as text instead; kombu ignores
unknown top-level members and keeps them when it restores a message.
"""

from __future__ import annotations

#: Shared helpers, prepended to the scripts that need them.
_HELPERS = r"""
local function bump(raw)
    -- the counter is the first member when fastq put it there, so the first match is ours
    local s, e, n = string.find(raw, '"fastq%-redeliveries": *(%d+)')
    if s then
        return string.sub(raw, 1, s - 1) .. '"fastq-redeliveries": ' .. (tonumber(n) + 1)
            .. string.sub(raw, e + 1)
    end
    if string.find(raw, '^%s*{%s*}%s*$') then
        return '{"fastq-redeliveries": 1}'
    end
    local brace = string.find(raw, '{', 1, true)
    if brace and string.find(string.sub(raw, 1, brace - 1), '^%s*$') then
        return '{"fastq-redeliveries": 1, ' .. string.sub(raw, brace + 1)
    end
    return raw  -- not a JSON object: nothing sensible to count in
end

local function server_now()
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000, t[1] .. t[2]
end
"""

#: KEYS: held, owners, leases, then N band keys, then their N delayed keys.
#: ARGV: token, lease seconds, limit, N, prefix, restore limit, promote limit.
#: Returns a flat array: band index (1-based), tag, envelope, ... for each claimed message.
CLAIM = _HELPERS + r"""
local held, owners, leases = KEYS[1], KEYS[2], KEYS[3]
local token, lease, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local nb, prefix = tonumber(ARGV[4]), ARGV[5]
local restore_limit, promote_limit = tonumber(ARGV[6]), tonumber(ARGV[7])
local now, stamp = server_now()

-- 1. whatever a dead or stalled holder stopped extending goes back to the front of its
--    queue (RPUSH: the end consumers read next, as kombu restores), counted
local lapsed = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, restore_limit)
for _, tag in ipairs(lapsed) do
    local raw = redis.call('HGET', held, tag)
    local owner = redis.call('HGET', owners, tag)
    if raw and owner then
        local tab = string.find(owner, '\t', 1, true)
        if tab then
            redis.call('RPUSH', prefix .. string.sub(owner, tab + 1), bump(raw))
        end
    end
    redis.call('HDEL', held, tag)
    redis.call('HDEL', owners, tag)
    redis.call('ZREM', leases, tag)
end

-- 2. delayed messages that fell due join the back of their queue, like a fresh publish
for i = 1, nb do
    local delayed = KEYS[3 + nb + i]
    local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, promote_limit)
    if #due > 0 then
        for _, raw in ipairs(due) do
            redis.call('LPUSH', KEYS[3 + i], raw)
        end
        redis.call('ZREM', delayed, unpack(due))
    end
end

-- 3. claim: bands in the order given, oldest first, each message recorded as held
local out, n = {}, 0
local expiry = now + lease
for i = 1, nb do
    if n >= limit then break end
    local key = KEYS[3 + i]
    local got = redis.call('RPOP', key, limit - n)
    if got then
        local band = string.sub(key, #prefix + 1)
        for _, raw in ipairs(got) do
            n = n + 1
            local tag = nil
            local ok, env = pcall(cjson.decode, raw)
            if ok and type(env) == 'table' and type(env.properties) == 'table' then
                local t = env.properties.delivery_tag
                if type(t) == 'string' or type(t) == 'number' then tag = tostring(t) end
            end
            -- a message without a tag, or a duplicate of one held now, gets a tag of its
            -- own so that neither can settle the other
            if tag == nil or redis.call('HEXISTS', held, tag) == 1 then
                tag = 'fastq:' .. token .. ':' .. stamp .. ':' .. n
            end
            redis.call('HSET', held, tag, raw)
            redis.call('HSET', owners, tag, token .. '\t' .. band)
            redis.call('ZADD', leases, expiry, tag)
            out[#out + 1] = i
            out[#out + 1] = tag
            out[#out + 1] = raw
        end
    end
end
return out
"""

#: KEYS: held, owners, leases.
#: ARGV: token, prefix, mode, a1, a2, a3, a4, tags...
#: mode ack | release | requeue | defer (a1 = due time) |
#:      dead (a1 = record head JSON, a2 = cap, a3 = ttl seconds, a4 = band separator).
#: Only the claims whose owner is ``token`` are touched. Returns how many were.
SETTLE = _HELPERS + r"""
local held, owners, leases = KEYS[1], KEYS[2], KEYS[3]
local token, prefix, mode = ARGV[1], ARGV[2], ARGV[3]
local mine = token .. '\t'
local first, last, step = 8, #ARGV, 1
if mode == 'release' then
    -- pushed back to the read end in reverse, so the oldest is read first again
    first, last, step = #ARGV, 8, -1
end
local done = 0
for i = first, last, step do
    local tag = ARGV[i]
    local owner = redis.call('HGET', owners, tag)
    if owner and string.sub(owner, 1, #mine) == mine then
        local band = string.sub(owner, #mine + 1)
        if mode ~= 'ack' then
            local raw = redis.call('HGET', held, tag)
            if raw then
                if mode == 'release' then
                    redis.call('RPUSH', prefix .. band, raw)
                elseif mode == 'requeue' then
                    redis.call('LPUSH', prefix .. band, bump(raw))
                elseif mode == 'defer' then
                    redis.call('ZADD', prefix .. 'fastq:delayed:' .. band, tonumber(ARGV[4]), raw)
                elseif mode == 'dead' then
                    local queue = band
                    local sep = string.find(band, ARGV[7], 1, true)
                    if sep then queue = string.sub(band, 1, sep - 1) end
                    local dead = prefix .. 'fastq:dead:' .. queue
                    -- a JSON envelope is kept verbatim, anything else as a JSON string
                    local ok, env = pcall(cjson.decode, raw)
                    local kept = raw
                    if not ok or type(env) ~= 'table' then kept = cjson.encode(raw) end
                    redis.call('LPUSH', dead, ARGV[4] .. '"queue": ' .. cjson.encode(queue)
                        .. ', "envelope": ' .. kept .. '}')
                    redis.call('LTRIM', dead, 0, tonumber(ARGV[5]) - 1)
                    redis.call('EXPIRE', dead, tonumber(ARGV[6]))
                end
            end
        end
        redis.call('HDEL', held, tag)
        redis.call('HDEL', owners, tag)
        redis.call('ZREM', leases, tag)
        done = done + 1
    end
end
return done
"""

#: KEYS: owners, leases. ARGV: token, lease seconds, tags...
#: Pushes the lease of each tag still owned by ``token`` a full period ahead; returns the
#: tags that are no longer ours (restored by someone else after a lapse, or settled).
EXTEND = _HELPERS + r"""
local owners, leases = KEYS[1], KEYS[2]
local mine = ARGV[1] .. '\t'
local now = server_now()
local expiry = now + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV do
    local tag = ARGV[i]
    local owner = redis.call('HGET', owners, tag)
    if owner and string.sub(owner, 1, #mine) == mine then
        redis.call('ZADD', leases, 'XX', expiry, tag)
    else
        lost[#lost + 1] = tag
    end
end
return lost
"""
