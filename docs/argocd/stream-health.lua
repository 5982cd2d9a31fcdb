-- Argo CD health of a jetflow.io Stream, from the status the jetflow operator writes.
-- Progressing until the operator has observed the current generation (status and Ready
-- condition); Degraded for an invalid spec, a stream in Observe mode that does not exist, or a
-- declared change JetStream cannot make (the condition's message says what to do); Healthy
-- when Ready.
local hs = {}
local function condition(status, kind)
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end
local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the jetflow operator to report the stream's status"
  return hs
end
local ready = condition(obj.status, "Ready")
if generation ~= nil and (obj.status.observedGeneration < generation
    or (ready ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation)) then
  hs.status = "Progressing"
  hs.message = "Waiting for the jetflow operator to observe generation " .. generation
  return hs
end
local specValid = condition(obj.status, "SpecValid")
local degraded = condition(obj.status, "Degraded")
if specValid ~= nil and specValid.status == "False" then
  hs.status = "Degraded"
  hs.message = specValid.message
  return hs
end
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
if ready ~= nil then
  hs.status = "Degraded"
  hs.message = ready.message
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for the stream's Ready condition"
return hs
