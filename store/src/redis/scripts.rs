//! The server-side scripts of the Redis backend: the core's rules for a
//! commit (validate every recorded version, then apply: `engine/apply.rs`),
//! a sweep of one bucket and the deletion of sessions, each run atomically
//! by Redis (EVALSHA).
//!
//! Layout (format version 1; `P` is the key prefix, default `keel`; `H` a
//! session's key as 64 hex digits; `B` its first two hex digits, the
//! session's bucket, in braces so that a session and its bucket's indexes
//! share one Redis Cluster slot):
//! - `P:{B}:s:H`, a hash: `v` version, `c` created, `a` last access, `p`
//!   principal (absent: none), `k` package-set version; `n` ‖ package: the
//!   package's name-set version; `i` ‖ item: a value's version, `d` ‖ item:
//!   the encoded value, where item = package length (u16 BE) ‖ package ‖
//!   name. The hash expires (TTL) once Keel's rules say the session has.
//! - `P:{B}:t`: the bucket's commit counter; a commit's tid is
//!   counter × 256 + bucket, unique across buckets.
//! - `P:{B}:a` and `P:{B}:c`: sorted sets of the bucket's sessions by last
//!   access and by creation (the expiry indexes).
//! - `P:{B}:p:` ‖ principal: the set of the bucket's sessions of a principal.
//! - `P:settings` (hash of settings), `P:meta` (hash: `format_version`).

/// Validate and apply one change set. ARGV: prefix, now, timeout +
/// resolution (0: no idle expiry), absolute lifetime (0: none), then the
/// checks (count, then kind, H, field, version each), the session changes
/// (count, then H, expected version, wipe, op, created, last access,
/// principal flag, principal, touch or "" each) and the value writes
/// (count, then H, package, item, flag, value each). Returns {0, tid} (tid
/// 0: nothing written) or {1, index of the first check that failed}.
pub(crate) const COMMIT: &str = r#"
local P = ARGV[1]
local now = tonumber(ARGV[2])
local idle_ttl = tonumber(ARGV[3])
local lifetime = tonumber(ARGV[4])
local pos = 5
local function bucket(h) return P .. ':{' .. string.sub(h, 1, 2) .. '}:' end
local function skey(h) return bucket(h) .. 's:' .. h end
local function num(x) return tonumber(x) or 0 end

local nchecks = tonumber(ARGV[pos]); pos = pos + 1
for i = 0, nchecks - 1 do
  local kind, h, f, v = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], tonumber(ARGV[pos + 3])
  pos = pos + 4
  local field
  if kind == '0' then field = 'v'
  elseif kind == '1' then field = 'k'
  elseif kind == '2' then field = 'n' .. f
  else field = 'i' .. f end
  local cur = num(redis.call('HGET', skey(h), field))
  -- A package-set version exists only with its record.
  if kind == '1' and redis.call('HEXISTS', skey(h), 'v') == 0 then cur = 0 end
  if cur ~= v then return {1, i} end
end

local nsessions = tonumber(ARGV[pos]); pos = pos + 1
local sessions_at = pos
local items_at = pos + 9 * nsessions
local nitems = tonumber(ARGV[items_at])
if nsessions == 0 and nitems == 0 then return {0, 0} end

local first = (nsessions > 0) and ARGV[sessions_at] or ARGV[items_at + 1]
local tid = redis.call('INCR', bucket(first) .. 't') * 256 + tonumber(string.sub(first, 1, 2), 16)

-- Wipes and record changes first.
for s = 0, nsessions - 1 do
  local at = sessions_at + 9 * s
  local h, expect, wipe, op = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local created, last, has_p, p = ARGV[at + 4], tonumber(ARGV[at + 5]), ARGV[at + 6], ARGV[at + 7]
  local k = skey(h)
  if wipe == '1' then
    for _, f in ipairs(redis.call('HKEYS', k)) do
      local c = string.sub(f, 1, 1)
      if c == 'n' or c == 'i' or c == 'd' then redis.call('HDEL', k, f) end
    end
    if redis.call('HEXISTS', k, 'v') == 1 then redis.call('HSET', k, 'k', 0) end
  end
  local old_p = redis.call('HGET', k, 'p')
  if op == '1' then
    -- Last-access times only grow, within one generation.
    local a = last
    if wipe ~= '1' then
      local old_a = num(redis.call('HGET', k, 'a'))
      if old_a > a then a = old_a end
    end
    redis.call('HSET', k, 'v', tid, 'c', created, 'a', a)
    if redis.call('HEXISTS', k, 'k') == 0 then redis.call('HSET', k, 'k', 0) end
    if old_p then redis.call('SREM', bucket(h) .. 'p:' .. old_p, h) end
    if has_p == '1' then
      redis.call('HSET', k, 'p', p)
      redis.call('SADD', bucket(h) .. 'p:' .. p, h)
    else
      redis.call('HDEL', k, 'p')
    end
    redis.call('ZADD', bucket(h) .. 'a', a, h)
    redis.call('ZADD', bucket(h) .. 'c', created, h)
  elseif op == '2' then
    if old_p then redis.call('SREM', bucket(h) .. 'p:' .. old_p, h) end
    redis.call('DEL', k)
    redis.call('ZREM', bucket(h) .. 'a', h)
    redis.call('ZREM', bucket(h) .. 'c', h)
  end
end

-- Values; a name that appears or disappears bumps its package's name set
-- and the session's package set.
for j = 0, nitems - 1 do
  local at = items_at + 1 + 5 * j
  local h, pkg, item, has_v, value = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local k = skey(h)
  local changed
  if has_v == '1' then
    changed = redis.call('HEXISTS', k, 'i' .. item) == 0
    redis.call('HSET', k, 'i' .. item, tid, 'd' .. item, value)
  else
    changed = redis.call('HDEL', k, 'i' .. item) == 1
    redis.call('HDEL', k, 'd' .. item)
  end
  if changed then redis.call('HSET', k, 'n' .. pkg, tid, 'k', tid) end
end

-- Touches merge by maximum and never bump a version; then every session
-- still there expires (TTL) once Keel's rules say it has.
for s = 0, nsessions - 1 do
  local at = sessions_at + 9 * s
  local h, touch = ARGV[at], ARGV[at + 8]
  local k = skey(h)
  if redis.call('HEXISTS', k, 'v') == 1 then
    if touch ~= '' and tonumber(touch) > num(redis.call('HGET', k, 'a')) then
      redis.call('HSET', k, 'a', touch)
      redis.call('ZADD', bucket(h) .. 'a', touch, h)
    end
    local deadline = nil
    if idle_ttl > 0 then deadline = num(redis.call('HGET', k, 'a')) + idle_ttl end
    if lifetime > 0 then
      local old = num(redis.call('HGET', k, 'c')) + lifetime
      if deadline == nil or old < deadline then deadline = old end
    end
    if deadline == nil then
      redis.call('PERSIST', k)
    else
      local ttl = deadline - now + 1
      if ttl < 1 then ttl = 1 end
      redis.call('EXPIRE', k, ttl)
    end
  end
end
return {0, tid}
"#;

/// Delete up to ARGV[5] expired sessions of bucket ARGV[2]: last access
/// before ARGV[3] or created before ARGV[4] (-1: no such rule). Index
/// entries of sessions Redis already freed (their TTL fired) are dropped.
/// Returns {removed, whether more expired entries remain}.
pub(crate) const SWEEP: &str = r#"
local P, B = ARGV[1], ARGV[2]
local idle, age, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local bucket = P .. ':{' .. B .. '}:'
local seen, candidates = {}, {}
local function add(list)
  for _, h in ipairs(list) do
    if not seen[h] then seen[h] = true; table.insert(candidates, h) end
  end
end
if idle >= 0 then add(redis.call('ZRANGEBYSCORE', bucket .. 'a', '-inf', '(' .. idle, 'LIMIT', 0, limit)) end
if age >= 0 then add(redis.call('ZRANGEBYSCORE', bucket .. 'c', '-inf', '(' .. age, 'LIMIT', 0, limit)) end
local removed, handled = 0, 0
for _, h in ipairs(candidates) do
  if handled >= limit then break end
  handled = handled + 1
  local k = bucket .. 's:' .. h
  if redis.call('EXISTS', k) == 1 then
    local a = tonumber(redis.call('HGET', k, 'a')) or 0
    local c = tonumber(redis.call('HGET', k, 'c')) or 0
    if (idle >= 0 and a < idle) or (age >= 0 and c < age) then
      local p = redis.call('HGET', k, 'p')
      if p then redis.call('SREM', bucket .. 'p:' .. p, h) end
      redis.call('DEL', k)
      removed = removed + 1
    else
      -- A stale index entry: put the session back where it belongs.
      redis.call('ZADD', bucket .. 'a', a, h)
      redis.call('ZADD', bucket .. 'c', c, h)
      handled = handled - 1
    end
  end
  if redis.call('EXISTS', k) == 0 then
    redis.call('ZREM', bucket .. 'a', h)
    redis.call('ZREM', bucket .. 'c', h)
  end
end
local more = 0
if idle >= 0 and redis.call('ZCOUNT', bucket .. 'a', '-inf', '(' .. idle) > 0 then more = 1 end
if age >= 0 and redis.call('ZCOUNT', bucket .. 'c', '-inf', '(' .. age) > 0 then more = 1 end
return {removed, more}
"#;

/// Delete the sessions ARGV[2..] and their data; returns how many existed.
pub(crate) const DELETE: &str = r#"
local P = ARGV[1]
local removed = 0
for i = 2, #ARGV do
  local h = ARGV[i]
  local bucket = P .. ':{' .. string.sub(h, 1, 2) .. '}:'
  local k = bucket .. 's:' .. h
  if redis.call('EXISTS', k) == 1 then
    local p = redis.call('HGET', k, 'p')
    if p then redis.call('SREM', bucket .. 'p:' .. p, h) end
    redis.call('DEL', k)
    removed = removed + 1
  end
  redis.call('ZREM', bucket .. 'a', h)
  redis.call('ZREM', bucket .. 'c', h)
end
return removed
"#;
