//! The two Lua scripts: each step that must be atomic is one script, so a
//! publish can never be stored without being sent, or numbered twice.

/// KEYS: meta, stream. ARGV: pub/sub channel, a fresh epoch, size, ttl ms,
/// meta ttl ms, node id, json. Returns `{top, epoch}`.
///
/// A meta that is gone (expired, evicted, Redis restarted) starts a new epoch
/// and drops the stream: offsets restart at 1, and a stream left over from
/// the old epoch would otherwise mix two numberings.
pub(crate) const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local top = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], top .. '-0', 'd', ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[1], 'w1 ' .. ARGV[6] .. ' ' .. top .. ' ' .. epoch .. '\n' .. ARGV[7])
return {top, epoch}
"#;

/// KEYS: meta, stream. ARGV: a fresh epoch, meta ttl ms, first offset
/// wanted (`''`: the newest), limit. Returns `{top, epoch, id1, json1, ...}`
/// in offset order.
///
/// A channel without meta gets one (epoch, offset 0), as a publish would, so
/// the position a subscriber starts from is the one the next publish
/// continues.
pub(crate) const READ: &str = r#"
local m = redis.call('HMGET', KEYS[1], 's', 'e')
local top, epoch = tonumber(m[1]) or 0, m[2]
if not epoch then
  epoch = ARGV[1]
  top = 0
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local out = {top, epoch}
local limit = tonumber(ARGV[4])
if limit > 0 then
  local entries
  if ARGV[3] == '' then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
    for i = #entries, 1, -1 do
      out[#out + 1] = entries[i][1]
      out[#out + 1] = entries[i][2][2]
    end
  else
    entries = redis.call('XRANGE', KEYS[2], ARGV[3], '+', 'COUNT', limit)
    for i = 1, #entries do
      out[#out + 1] = entries[i][1]
      out[#out + 1] = entries[i][2][2]
    end
  end
end
return out
"#;

/// KEYS: meta (not touched: it only routes). ARGV: pub/sub channel,
/// envelope. On a Cluster a bare PUBLISH goes to any node and can overtake
/// a script's PUBLISH of the same channel on the cluster bus; sent from the
/// channel's slot, every publication of a channel takes one path, in order.
pub(crate) const PUBLISH_PLAIN: &str = r#"
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"#;
