-- Argo CD health of a homelab.io AppDatabase, from its Ready condition and observedGeneration.
--   Progressing: the operator has not yet observed the current generation, or the database is on its
--                way (CloudNativePG cluster starting, credentials syncing, the source of a restore
--                without a backup yet, retried errors).
--   Degraded:    Ready=False for a reason that needs a change from someone (bad spec, missing
--                reference or CRD, rejected child, credentials that cannot sync, stale backups or
--                failing WAL archiving).
--   Healthy:     Ready=True for the current generation.
local hs = {}

-- Ready=False reasons that resolve without anyone changing anything.
local transient = {
  ClusterCreating = true,
  ClusterNotFound = true,
  ClusterNotHealthy = true,
  ObjectStoreMissing = true,
  WaitingForExternalSecrets = true,
  SourceHasNoBackup = true,
  KubernetesAPIError = true,
  ApplyFailed = true,
  AzureError = true,
  AzureUnreachable = true,
  AzureThrottled = true,
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

local generation = obj.metadata.generation
local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the database"
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
