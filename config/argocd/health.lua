-- Argo CD health check for rotor.dev/SecretRotation (Lua 5.1).
-- Healthy: the target Secret holds a tested credential and the last rotation worked.
-- Progressing: no status yet, a rotation under way, or a spec change not yet seen.
-- Degraded: invalid spec, a foreign target Secret, missing credentials, or a failed
-- rotation (the previous credential may still be active; the message says).
local hs = { status = "Progressing", message = "Waiting for rotor to reconcile" }
if obj.status == nil then
  return hs
end
local s = obj.status
local function condition(t)
  if s.conditions == nil then return nil end
  for _, c in ipairs(s.conditions) do
    if c.type == t then return c end
  end
  return nil
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and s.observedGeneration ~= nil and s.observedGeneration < generation then
  hs.message = "Waiting for rotor to observe generation " .. tostring(generation)
  return hs
end
local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message or s.lastRotationMessage or "rotation failed"
  return hs
end
local progressing = condition("Progressing")
if s.rotationStatus == "Rotating" or (progressing ~= nil and progressing.status == "True") then
  hs.message = s.lastRotationMessage or "Rotating"
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = s.lastRotationMessage or "Credential active"
  return hs
end
hs.message = s.lastRotationMessage or "Waiting for the first rotation"
return hs
