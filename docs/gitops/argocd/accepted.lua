-- Argo CD health of a sendfleet.io DomainPolicy or WarmupPlan
-- (docs/INSTALL.md, "GitOps"): Healthy when the operator accepted the spec and
-- uses it, Degraded when it refused it (the message names the field; the
-- policy or plan is left out of every pool until fixed).
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
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    hs.message = (condition.reason or "") .. ": " .. (condition.message or "")
    if condition.status == "True" then
      hs.status = "Healthy"
    elseif condition.status == "False" then
      hs.status = "Degraded"
    end
  end
end
return hs
