#!lua name=notify
-- notify history library v2
--
-- Loaded by every notify node with FUNCTION LOAD REPLACE (at start, after
-- every resubscribe, and when a call finds it missing). The node substitutes
-- its NOTIFY_HISTORY_SIZE and NOTIFY_HISTORY_TTL below: they are the
-- defaults for callers that do not pass their own (redis-cli, applications).
--
-- Keys of the stream of channel C (C = notify:<id> or notify_topic:<name>),
-- all carrying C as a hash tag so that they live in C's cluster slot:
--   {C}:history   stream, entries "0-<seq>" with fields p (payload), e (event)
--   {C}:epoch     string, the stream's identity, renewed when the stream is new
--   {C}:received  hash epoch -> highest seq a connection received (users only)
--   {C}:handoffs  hash "<epoch>:<seq>" -> "1", entries claimed (users only)
-- The stream and the epoch expire together, TTL after the last publish.

local VERSION = 2
local SIZE = __SIZE__
local TTL_MS = __TTL_MS__
local MAGIC = '\0notify-h1\0'

-- The checks below return the value, or nil and the error reply to return:
-- an error returned (not raised) reaches the caller without a Lua trace.
local function fail(msg)
  return redis.error_reply('ERR notify: ' .. msg)
end

local function refuse(msg)
  return nil, fail(msg)
end

-- channel returns the declared key when it is a user's or a topic's
-- channel; any other key is refused.
local function channel(keys)
  local c = keys[1]
  if c ~= nil and ((string.sub(c, 1, 7) == 'notify:' and #c > 7) or (string.sub(c, 1, 13) == 'notify_topic:' and #c > 13)) then
    return c
  end
  return refuse('the key must be notify:<id> or notify_topic:<name>, got ' .. tostring(c))
end

-- positive reads a whole number > 0.
local function positive(s, what)
  local n = tonumber(s)
  if n == nil or n < 1 or n ~= math.floor(n) then
    return refuse(what .. ' must be a whole number > 0, got ' .. tostring(s))
  end
  return n
end

-- seq checks a sequence number (decimal digits, > 0) and keeps it as the
-- string sent, so that it is never rounded or printed as 1e+15.
local function seq(s, what)
  if type(s) ~= 'string' or not string.match(s, '^[1-9]%d*$') then
    return refuse(what .. ' must be a sequence number > 0, got ' .. tostring(s))
  end
  return s
end

-- epoch checks an epoch argument.
local function epoch_arg(s)
  if type(s) ~= 'string' or s == '' then
    return refuse('want an epoch')
  end
  return s
end

local function seq_of(id)
  return string.sub(id, 3) -- ids are "0-<seq>"
end

-- notify_publish 1 C payload [event [maxlen ttl_ms]]: append to C's stream
-- (trimmed to exactly maxlen entries, kept ttl_ms after this publish),
-- PUBLISH on C in the wire format nodes decode, return the cursor
-- "<epoch>:<seq>". notify_spublish is the same with SPUBLISH, for nodes
-- with NOTIFY_SUBSCRIBE_MODE=sharded.
local function publish_with(command, name, keys, args)
  local c, err = channel(keys)
  if not c then return err end
  local payload = args[1]
  if payload == nil then
    return fail('want a payload: FCALL ' .. name .. ' 1 ' .. c .. ' <payload> [event [maxlen ttl_ms]]')
  end
  local event = args[2] or ''
  local maxlen, ttl = SIZE, TTL_MS
  if args[3] ~= nil or args[4] ~= nil then
    maxlen, err = positive(args[3], 'maxlen')
    if not maxlen then return err end
    ttl, err = positive(args[4], 'ttl_ms')
    if not ttl then return err end
  end
  local hist = '{' .. c .. '}:history'
  local ek = '{' .. c .. '}:epoch'
  local epoch = false
  if redis.call('EXISTS', hist) == 1 then
    epoch = redis.call('GET', ek)
    if not epoch then
      -- A stream without its epoch (deleted by hand): start afresh so that
      -- seq restarts at 1 under a new identity.
      redis.call('DEL', hist)
    end
  end
  if not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%s%06d', t[1], t[2])
    redis.call('SET', ek, epoch, 'PX', ttl)
  else
    redis.call('PEXPIRE', ek, ttl)
  end
  local id = redis.call('XADD', hist, 'MAXLEN', maxlen, '0-*', 'p', payload, 'e', event)
  redis.call('PEXPIRE', hist, ttl)
  local cursor = epoch .. ':' .. seq_of(id)
  redis.call(command, c, MAGIC .. cursor .. '\0' .. event .. '\0' .. payload)
  return cursor
end

local function publish(keys, args)
  return publish_with('PUBLISH', 'notify_publish', keys, args)
end

local function spublish(keys, args)
  return publish_with('SPUBLISH', 'notify_spublish', keys, args)
end

-- notify_read 1 C [since_epoch since_seq]: one consistent look at C's
-- stream: {epoch, first seq, last seq, seq, payload, event, seq, ...} with
-- the entries after since_seq when since is of the stream's epoch and not
-- past its last entry, else every entry. An absent stream is {'', '', ''}.
local function read(keys, args)
  local c, err = channel(keys)
  if not c then return err end
  local since = nil
  if args[1] ~= nil then
    since, err = seq(args[2], 'since_seq')
    if not since then return err end
  end
  local hist = '{' .. c .. '}:history'
  local epoch = redis.call('GET', '{' .. c .. '}:epoch')
  if not epoch or redis.call('EXISTS', hist) == 0 then
    return {'', '', ''}
  end
  local first = redis.call('XRANGE', hist, '-', '+', 'COUNT', 1)
  if #first == 0 then
    return {epoch, '', ''}
  end
  local last = seq_of(redis.call('XREVRANGE', hist, '+', '-', 'COUNT', 1)[1][1])
  local entries
  if since ~= nil and args[1] == epoch and tonumber(since) <= tonumber(last) then
    entries = redis.call('XRANGE', hist, '(0-' .. since, '+')
  else
    entries = redis.call('XRANGE', hist, '-', '+')
  end
  local out = {epoch, seq_of(first[1][1]), last}
  for _, e in ipairs(entries) do
    local f = e[2]
    local p, ev = '', ''
    for i = 1, #f, 2 do
      if f[i] == 'p' then p = f[i + 1] elseif f[i] == 'e' then ev = f[i + 1] end
    end
    out[#out + 1] = seq_of(e[1])
    out[#out + 1] = p
    out[#out + 1] = ev
  end
  return out
end

-- extend sets key's TTL to ttl unless it already has a longer one.
local function extend(key, ttl)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end

-- entry_args reads the arguments of the hand-off functions: the user's
-- channel, epoch, seq, ttl_ms.
local function entry_args(keys, args)
  local c, e, s, ttl, err
  c, err = channel(keys)
  if not c then return nil, err end
  if string.sub(c, 1, 7) ~= 'notify:' then
    return refuse('hand-offs are per user: the key must be notify:<id>, got ' .. c)
  end
  e, err = epoch_arg(args[1])
  if not e then return nil, err end
  s, err = seq(args[2], 'seq')
  if not s then return nil, err end
  ttl, err = positive(args[3], 'ttl_ms')
  if not ttl then return nil, err end
  return {c = c, epoch = e, seq = s, ttl = ttl}
end

-- notify_received 1 notify:<id> epoch seq ttl_ms: connections of the user
-- received every entry up to epoch:seq. Kept per epoch, only moving
-- forward; fields of epochs other than this one and the stream's current
-- one are dropped.
local function received(keys, args)
  local a, err = entry_args(keys, args)
  if not a then return err end
  local rk = '{' .. a.c .. '}:received'
  local old = tonumber(redis.call('HGET', rk, a.epoch) or '0')
  if tonumber(a.seq) > old then
    redis.call('HSET', rk, a.epoch, a.seq)
  end
  if redis.call('HLEN', rk) > 2 then
    local current = redis.call('GET', '{' .. a.c .. '}:epoch')
    for _, f in ipairs(redis.call('HKEYS', rk)) do
      if f ~= a.epoch and f ~= current then
        redis.call('HDEL', rk, f)
      end
    end
  end
  extend(rk, a.ttl)
  return 1
end

-- notify_claim 1 notify:<id> epoch seq ttl_ms: 1 for the one caller that
-- claims entry epoch:seq first, 0 for everyone else and when a connection
-- received it (notify_received covers it). Claims are kept ttl_ms (at least:
-- the hash's TTL only grows).
local function claim(keys, args)
  local a, err = entry_args(keys, args)
  if not a then return err end
  local got = tonumber(redis.call('HGET', '{' .. a.c .. '}:received', a.epoch) or '0')
  if tonumber(a.seq) <= got then
    return 0
  end
  local hk = '{' .. a.c .. '}:handoffs'
  if redis.call('HSETNX', hk, a.epoch .. ':' .. a.seq, '1') == 0 then
    return 0
  end
  extend(hk, a.ttl)
  return 1
end

-- notify_version: {version, size, ttl_ms} baked in by the node that loaded
-- the library.
local function version()
  return {VERSION, SIZE, TTL_MS}
end

redis.register_function('notify_publish', publish)
redis.register_function('notify_spublish', spublish)
redis.register_function{function_name = 'notify_read', callback = read, flags = {'no-writes'}}
redis.register_function('notify_received', received)
redis.register_function('notify_claim', claim)
redis.register_function{function_name = 'notify_version', callback = version, flags = {'no-writes'}}
