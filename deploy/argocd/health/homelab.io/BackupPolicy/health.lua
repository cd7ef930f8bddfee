-- Argo CD health of a homelab.io BackupPolicy, from spec.suspend, its Ready and DrillSucceeded
-- conditions and observedGeneration.
--   Suspended:   spec.suspend is true: no base backups and no restore drills are scheduled.
--   Progressing: the operator has not yet observed the current generation, or retries an error.
--   Degraded:    Ready=False for a reason that needs a change from someone (bad schedule, missing
--                CRD), or DrillSucceeded=False (the last restore drill failed).
--   Healthy:     Ready=True for the current generation.
local hs = {}

-- Ready=False reasons that resolve without anyone changing anything.
local transient = {
  KubernetesAPIError = true,
  ApplyFailed = true,
}

local function find_condition(status, condition_type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == condition_type then
      return condition
    end
  end
  return nil
end

local function describe(condition)
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if reason ~= "" then
    return reason
  end
  return message
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Backups and restore drills are suspended (spec.suspend)"
  return hs
end

local generation = obj.metadata.generation
local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the policy"
  return hs
end
if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. generation
  return hs
end

local ready = find_condition(status, "Ready")
if ready == nil or (generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
-- A failed restore drill is reported next to Ready (the policy itself is fine): the backups it
-- stands for are not proven to restore.
local drill = find_condition(status, "DrillSucceeded")
if ready.status == "True" and drill ~= nil and drill.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(drill)
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if ready.status == "False" and not transient[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready)
return hs
