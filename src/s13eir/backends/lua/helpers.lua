-- Shared by flip.lua and apply.lua (loaded before them): the 128-bit XOR of list checksums, the writer-lock fence, and the change-stream record.
local EMPTY = string.rep('0', 32)
local function xor128(a, b)
  local out = {}
  for j = 0, 3 do
    local s = j * 8 + 1
    out[j + 1] = bit.tohex(bit.bxor(tonumber(string.sub(a, s, s + 7), 16), tonumber(string.sub(b, s, s + 7), 16)), 8)
  end
  return table.concat(out)
end
local function fenced(lock, token)
  return token == '' or redis.call('GET', lock) == token
end
local function stream_add(stream, maxlen, seq, gen, op, lst, imei, imsi, reason, source)
  local x = {'XADD', stream}
  if maxlen ~= '0' then x[#x + 1] = 'MAXLEN'; x[#x + 1] = '~'; x[#x + 1] = maxlen end
  local s = string.format('%d', seq)
  for _, v in ipairs({s .. '-0', 'seq', s, 'gen', gen, 'op', op, 'list', lst, 'imei', imei, 'imsi', imsi,
                      'reason', reason, 'source', source}) do x[#x + 1] = v end
  redis.call(unpack(x))
end
