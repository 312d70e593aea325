-- ArgoCD health check for sloserve.io/ModelService (resource.customizations.health.sloserve.io_ModelService).
-- Reads what the operator writes: status.observedGeneration and the kstatus conditions Stalled and
-- Reconciling, then Ready. Until the operator has seen the current generation nothing else is trusted.
local hs = { status = "Progressing", message = "Waiting for the sloserve operator" }
if obj.status == nil then
  return hs
end
local generation = (obj.metadata and obj.metadata.generation) or 0
local observed = obj.status.observedGeneration
if observed == nil or observed < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local byType = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    byType[condition.type] = condition
  end
end
local function text(condition)
  local message = condition.message or ""
  if message == "" then
    return condition.reason or condition.type
  end
  return (condition.reason or condition.type) .. ": " .. message
end
local stalled, reconciling, ready = byType["Stalled"], byType["Reconciling"], byType["Ready"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready)
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = text(reconciling)
  return hs
end
if ready ~= nil then
  hs.message = text(ready)
end
return hs
