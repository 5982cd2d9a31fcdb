-- Argo CD health of a jetflow.io Pipeline, from the status the jetflow operator writes.
-- Progressing until the operator has observed the current generation (status and Ready
-- condition); Degraded for an invalid spec, a stopped split or a stale checkpoint (the
-- condition's message says what to do); Suspended while spec.suspend is true; Healthy when
-- Ready (a running pipeline whose workers all run the current configuration, or a finished
-- bounded run).
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
local function isTrue(c)
  return c ~= nil and c.status == "True"
end
local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the jetflow operator to report the pipeline's status"
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
local stale = condition(obj.status, "CheckpointStale")
local progressing = condition(obj.status, "Progressing")
local phase = obj.status.phase
if specValid ~= nil and specValid.status == "False" then
  hs.status = "Degraded"
  hs.message = specValid.message
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  if isTrue(degraded) then
    hs.message = degraded.message
  elseif ready ~= nil then
    hs.message = ready.message
  else
    hs.message = "The pipeline failed"
  end
  return hs
end
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = ready ~= nil and ready.message or "The bounded run finished"
  return hs
end
if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = ready ~= nil and ready.message or "spec.suspend is true"
  return hs
end
if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = degraded.message
  return hs
end
if isTrue(stale) then
  hs.status = "Degraded"
  hs.message = stale.message
  return hs
end
if isTrue(ready) then
  if isTrue(progressing) then
    hs.status = "Progressing"
    hs.message = progressing.message
  else
    hs.status = "Healthy"
    hs.message = ready.message
  end
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = ready.message
else
  hs.message = "Phase " .. tostring(phase)
end
return hs
