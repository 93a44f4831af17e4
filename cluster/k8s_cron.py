"""The schedule for clusters without KubeRay's ``RayCronJob`` gate: a ``batch/v1`` CronJob whose pod
(the launcher, any image with kubectl and sh) creates the run's RayJob through the Kubernetes
API, follows it, and exits with its outcome, so the CronJob's ``concurrencyPolicy: Forbid`` holds
while a run lasts and its history shows failed runs as failed Jobs.

The RayJob is named after the launcher's Job, which Kubernetes names after the schedule tick:
each night gets its own RayJob, and a launcher pod that is retried (node drained, API hiccup)
finds the run it started instead of starting a second one. The Job owns the RayJob, so the
CronJob's history limits prune old RayJobs with their Jobs, and deleting a Job cancels its run. The launcher polls the RayJob with
``get``: ``kubectl wait`` cannot wait for "Complete or Failed" and would also need list and
watch. So the Role allows ``create`` and ``get`` on ``rayjobs`` in ``ray.io`` in its namespace,
nothing else.
"""
from __future__ import annotations

from typing import Optional

import yaml

from . import k8s_pods as pods
from . import k8s_ray
from .k8s_options import RenderOptions

LAUNCHER = "tokenmill-launcher"          # ServiceAccount, Role, RoleBinding and the script's ConfigMap
LAUNCHER_DIR = "/etc/tokenmill-launcher"
#: the launcher's exit status when the run itself failed: the Job stops (podFailurePolicy)
RUN_FAILED = 3
POLL_SECONDS = 30

LAUNCH_SH = r"""# tokenmill's CronJob launcher: one scheduled run = one RayJob, named after this pod's Job (one
# Job per schedule tick), so a retried pod follows the run it started instead of starting another.
# Exit status: 0 the run succeeded; @RUN_FAILED@ the run failed (the Job stops); other: the launcher
# could not do its part (the Job retries the pod).
set -u
ns="$POD_NAMESPACE"
run="$JOB_NAME"
manifest="${RAYJOB_MANIFEST:-@LAUNCHER_DIR@/rayjob.yaml}"
poll="${POLL_SECONDS:-@POLL_SECONDS@}"
log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }

if kubectl get rayjob.ray.io "$run" -n "$ns" -o name >/dev/null 2>&1; then
  log "RayJob $ns/$run exists (this Job's pod was retried): following it"
else
  # owned by this Job: the CronJob's history limits delete old runs' RayJobs with their Jobs, and
  # deleting a running Job cancels its run
  owner="{\"apiVersion\":\"batch/v1\",\"kind\":\"Job\",\"name\":\"$run\",\"uid\":\"$JOB_UID\"}"
  if ! kubectl patch --local -f "$manifest" --type merge -o yaml \
      -p "{\"metadata\":{\"name\":\"$run\",\"ownerReferences\":[$owner]}}" | kubectl create -n "$ns" -f -; then
    kubectl get rayjob.ray.io "$run" -n "$ns" -o name >/dev/null 2>&1 || { log "could not create RayJob $ns/$run"; exit 1; }
  fi
  log "RayJob $ns/$run created; the run's own log: kubectl logs -n $ns -f job/$run"
fi

last=""
misses=0
while :; do
  if ! out=$(kubectl get rayjob.ray.io "$run" -n "$ns" \
      -o 'jsonpath={.status.jobDeploymentStatus}|{.status.jobStatus}|{.status.reason}|{.status.message}' 2>&1); then
    case "$out" in
      *NotFound*|*"not found"*) log "RayJob $ns/$run was deleted: the run is over"; exit @RUN_FAILED@ ;;
    esac
    misses=$((misses + 1))
    log "cannot read RayJob $ns/$run (attempt $misses): $out"
    [ "$misses" -lt 10 ] || exit 1
    sleep "$poll"
    continue
  fi
  misses=0
  deployment=${out%%|*}; rest=${out#*|}
  job=${rest%%|*}; rest=${rest#*|}
  reason=${rest%%|*}; message=${rest#*|}
  if [ "$deployment/$job" != "$last" ]; then
    log "RayJob $run: ${deployment:-New}${job:+, Ray job $job}"
    last="$deployment/$job"
  fi
  case "$deployment" in
    Complete)
      if [ "$job" = SUCCEEDED ]; then log "the run succeeded"; exit 0; fi
      log "the run ended with Ray job status $job${message:+: $message}"; exit @RUN_FAILED@ ;;
    Failed|ValidationFailed)
      log "the run failed: ${reason:-$deployment}${message:+: $message}"; exit @RUN_FAILED@ ;;
  esac
  sleep "$poll"
done
""".replace("@RUN_FAILED@", str(RUN_FAILED)).replace("@LAUNCHER_DIR@", LAUNCHER_DIR).replace(
    "@POLL_SECONDS@", str(POLL_SECONDS))


def service_account(namespace: Optional[str] = None) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": pods.metadata(LAUNCHER, None, "launcher", namespace)}


def role(namespace: Optional[str] = None) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": pods.metadata(LAUNCHER, None, "launcher", namespace),
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get"]}]}


def role_binding(namespace: Optional[str] = None) -> dict:
    subject = {"kind": "ServiceAccount", "name": LAUNCHER}
    if namespace:
        subject["namespace"] = namespace   # in a kustomization, its namespace fills this in
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": pods.metadata(LAUNCHER, None, "launcher", namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LAUNCHER},
            "subjects": [subject]}


def launcher_script(namespace: Optional[str] = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": pods.metadata(LAUNCHER, None, "launcher", namespace),
            "data": {"launch.sh": LAUNCH_SH}}


def shared_objects(namespace: Optional[str] = None) -> list[dict]:
    """What every config's CronJob shares (the kustomize base): RBAC and the launcher script."""
    return [service_account(namespace), role(namespace), role_binding(namespace), launcher_script(namespace)]


def rayjob_template(opts: RenderOptions, namespace: Optional[str] = None) -> dict:
    """The RayJob manifest the launcher creates, in a ConfigMap (also good for a run by hand:
    ``kubectl get cm NAME-rayjob -o jsonpath='{.data.rayjob\\.yaml}' | kubectl create -f -``)."""
    manifest = yaml.safe_dump(k8s_ray.rayjob(opts), sort_keys=False, default_flow_style=False, width=120)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": pods.metadata(f"{opts.name}-rayjob", opts, "rayjob-template", namespace),
            "data": {"rayjob.yaml": manifest}}


def _launcher_container(opts: RenderOptions) -> dict:
    return {"name": "launcher", "image": opts.launcher_image, "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", f"{LAUNCHER_DIR}/launch.sh"],
            "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "JOB_NAME", "valueFrom": {"fieldRef": {
                        "fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}},
                    {"name": "JOB_UID", "valueFrom": {"fieldRef": {
                        "fieldPath": "metadata.labels['batch.kubernetes.io/controller-uid']"}}},
                    {"name": "RAYJOB_MANIFEST", "value": f"{LAUNCHER_DIR}/rayjob.yaml"},
                    {"name": "POLL_SECONDS", "value": str(POLL_SECONDS)},
                    *pods.home_env()],
            "resources": pods.resources("250m", "256Mi", requests=("50m", "128Mi")),
            "securityContext": pods.container_security(True),
            "volumeMounts": [{"name": "launcher", "mountPath": LAUNCHER_DIR, "readOnly": True},
                             *pods.scratch_mounts(shm=False)]}


def cronjob(opts: RenderOptions, namespace: Optional[str] = None) -> dict:
    volumes = [{"name": "launcher", "projected": {"sources": [
        {"configMap": {"name": LAUNCHER}}, {"configMap": {"name": f"{opts.name}-rayjob"}}]}},
        *pods.scratch_volumes()]
    spec = pods.pod_spec(opts, [_launcher_container(opts)], volumes, restart_policy="Never",
                         service_account=LAUNCHER, automount_token=True)
    # the launcher outlives the run it follows by a margin; KubeRay ends the run itself at its deadline
    deadline = opts.deadline_s * (opts.retries + 1) + 1800
    job_spec = {"backoffLimit": 3, "activeDeadlineSeconds": deadline,
                "podFailurePolicy": {"rules": [
                    {"action": "FailJob", "onExitCodes": {"containerName": "launcher", "operator": "In",
                                                          "values": [RUN_FAILED]}},
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
                "template": pods.template(opts, "launcher", spec)}
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": pods.metadata(opts.name, opts, "cronjob", namespace),
            "spec": {"schedule": opts.schedule, "timeZone": opts.time_zone,
                     "concurrencyPolicy": "Forbid",
                     "startingDeadlineSeconds": opts.starting_deadline_s,
                     "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 5,
                     "jobTemplate": {"metadata": {"labels": pods.labels(opts, "launcher")}, "spec": job_spec}}}
