-- Argo CD health of a sendfleet.io SendingPool (docs/INSTALL.md, "GitOps").
-- Reads only status.observedGeneration and status.conditions, as the
-- operator writes them (docs/TROUBLESHOOTING.md lists every reason).
-- Lua 5.1 (Argo CD runs gopher-lua).
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local c = {}
for _, condition in ipairs(obj.status.conditions) do
  c[condition.type] = condition
end
local function says(condition)
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end
-- Reasons that stop the pool before its instances: nothing was applied,
-- a person has to act (the operator retries, but the spec or the
-- administrator's settings must change first).
local stopped = {
  InvalidSpec = true, MissingReference = true, ApplyFailed = true,
  ImageNotAllowed = true, NodeNotAllowed = true, NamespaceNotAllowed = true,
  ObjectConflict = true, AddressInUse = true,
}
local ready, degraded, progressing = c["Ready"], c["Degraded"], c["Progressing"]
if ready ~= nil and ready.status == "False" and stopped[ready.reason] then
  hs.status = "Degraded"
  hs.message = says(ready)
  return hs
end
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = says(degraded)
  return hs
end
if ready ~= nil and ready.status == "True" then
  if progressing ~= nil and progressing.status == "True" then
    hs.message = says(progressing)
    return hs
  end
  hs.status = "Healthy"
  hs.message = says(ready)
  local listed = c["Listed"]
  if listed ~= nil and listed.status == "True" then
    -- Sending continues through the IPs in rotation; the listing is an
    -- alert's business (docs/MONITORING.md), not a sync failure.
    hs.message = hs.message .. "; " .. says(listed)
  end
  return hs
end
if ready ~= nil then
  hs.message = says(ready)
end
return hs
