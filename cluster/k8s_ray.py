"""KubeRay objects (``ray.io/v1``): the RayJob that runs one config on a cluster of its own, and the
RayCronJob that creates one such RayJob per schedule tick.

The cluster: a head that runs no work (``num-cpus: 0``; the job's driver, ``tokenmill run``, runs
there and reads the config mounted from the ConfigMap), a CPU worker group and, when the config
has GPU stages (or ``--max-gpu-workers`` asks), a GPU worker group that starts at zero; Ray's
autoscaler grows and shrinks both between their bounds. The RayJob deletes its cluster
``ttlSecondsAfterFinished`` after the run (``shutdownAfterJobFinishes``), fails the run after
``activeDeadlineSeconds``, and retries a failed run ``backoffLimit`` times on a new cluster;
a retried ``tokenmill run`` keeps every phase the failed one committed, and takes over the
output's lease its predecessor left at once: every attempt of one RayJob runs with
``--lease-holder`` set to the RayJob's name, which a run of another RayJob never has.

The head authenticates (``authOptions.mode: token``): KubeRay gives every Ray container, the
autoscaler and the submitter ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` from a Secret it
makes for each cluster (and deletes with it), or from ``--ray-auth-secret``. A pod without the
token cannot use the GCS, the dashboard, the Jobs API or the client server.
"""
from __future__ import annotations

from . import k8s_pods as pods
from .k8s_options import CONFIG_DIR, LEASE_HOLDER_ENV, RAYJOB_NAME_LABEL, Group, RenderOptions

API_VERSION = "ray.io/v1"
CONFIG_VOLUME = "config"
SUBMITTER = "ray-job-submitter"   # KubeRay's name for the container that runs `ray job submit`
GPU_TOLERATION = {"key": pods.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def _ray_container(opts: RenderOptions, name: str, cpus: str, memory: str, gpus: int = 0,
                   extra_mounts: tuple = (), ports: tuple = ()) -> dict:
    c = {"name": name, "image": opts.image, "imagePullPolicy": "IfNotPresent"}
    if ports:
        c["ports"] = [{"name": n, "containerPort": p} for n, p in ports]
    c["env"] = pods.home_env()
    env_from = pods.secret_env(opts)
    if env_from:
        c["envFrom"] = env_from
    c["resources"] = pods.resources(cpus, memory, gpus)
    c["securityContext"] = pods.container_security(opts.read_only_root)
    c["volumeMounts"] = pods.scratch_mounts(shm=True) + list(extra_mounts)
    return c


def head_group(opts: RenderOptions) -> dict:
    container = _ray_container(
        opts, "ray-head", opts.head_cpus, opts.head_memory,
        extra_mounts=({"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},),
        ports=(("gcs-server", 6379), ("dashboard", 8265), ("client", 10001)))
    volumes = pods.scratch_volumes(opts.head_memory) + [
        {"name": CONFIG_VOLUME, "configMap": {"name": opts.config_map}}]
    # the head keeps its service account token: KubeRay's autoscaler sidecar runs in this pod
    # and scales the worker groups through the Kubernetes API
    spec = pods.pod_spec(opts, [container], volumes, automount_token=None)
    return {"rayStartParams": {"num-cpus": "0"}, "template": pods.template(opts, "ray-head", spec)}


def worker_group(opts: RenderOptions, group: Group) -> dict:
    container = _ray_container(opts, "ray-worker", group.cpus, group.memory, group.gpus)
    spec = pods.pod_spec(opts, [container], pods.scratch_volumes(group.memory),
                         tolerations=[GPU_TOLERATION] if group.gpus else None)
    return {"groupName": group.name, "replicas": group.min_workers, "minReplicas": group.min_workers,
            "maxReplicas": group.max_workers, "rayStartParams": {},
            "template": pods.template(opts, f"ray-worker-{group.name}", spec)}


def autoscaler_options(opts: RenderOptions) -> dict:
    """KubeRay injects the autoscaler as a sidecar of the head pod; these settings are all of it
    that the manifest controls, so they carry the same security context and limits."""
    return {"upscalingMode": "Default", "idleTimeoutSeconds": opts.idle_timeout_s,
            "resources": pods.resources("500m", "512Mi"),
            "securityContext": pods.container_security(True),
            "env": pods.home_env(),
            "volumeMounts": [{"name": pods.TMP_VOLUME, "mountPath": "/tmp"}]}


def auth_options(opts: RenderOptions) -> dict:
    """Ray's token authentication (KubeRay >= 1.5.1 needs ``rayVersion`` >= 2.52.0 for it)."""
    if not opts.ray_auth:
        return {"mode": "disabled"}
    auth = {"mode": "token"}
    if opts.ray_auth_secret:
        auth["secretName"] = opts.ray_auth_secret
    return auth


def cluster_spec(opts: RenderOptions) -> dict:
    spec = {"rayVersion": opts.ray_version} if opts.ray_version else {}
    spec["authOptions"] = auth_options(opts)
    spec["enableInTreeAutoscaling"] = True
    spec["autoscalerOptions"] = autoscaler_options(opts)
    spec["headGroupSpec"] = head_group(opts)
    groups = [opts.cpu_group] + ([opts.gpu_group] if opts.gpu_group else [])
    spec["workerGroupSpecs"] = [worker_group(opts, g) for g in groups]
    return spec


def submitter_template(opts: RenderOptions) -> dict:
    """The pod of KubeRay's submitter Job (K8sJobMode): ``ray job submit`` and ``ray job logs
    --follow``, so ``kubectl logs job/<rayjob>`` shows the run's progress lines. No command here:
    KubeRay writes it, with the entrypoint inside ``bash -c``: ``$TOKENMILL_LEASE_HOLDER`` there
    is this pod's RayJob name (KubeRay's label), the run's lease holder. KubeRay adds the Ray
    token; it needs no other credentials and not the Kubernetes API."""
    holder = {"name": LEASE_HOLDER_ENV,
              "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{RAYJOB_NAME_LABEL}']"}}}
    container = {"name": SUBMITTER, "image": opts.image, "imagePullPolicy": "IfNotPresent",
                 "env": pods.home_env() + [holder],
                 "resources": pods.resources("1", "1Gi", requests=("200m", "512Mi")),
                 "securityContext": pods.container_security(True),
                 "volumeMounts": pods.scratch_mounts(shm=False)}
    spec = pods.pod_spec(opts, [container], pods.scratch_volumes(), restart_policy="Never")
    return pods.template(opts, "submitter", spec)


def rayjob_spec(opts: RenderOptions) -> dict:
    return {"entrypoint": opts.entrypoint,
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": opts.ttl_s,
            "activeDeadlineSeconds": opts.deadline_s,
            "backoffLimit": opts.retries,
            "rayClusterSpec": cluster_spec(opts),
            "submitterPodTemplate": submitter_template(opts)}


def rayjob(opts: RenderOptions) -> dict:
    """A RayJob manifest for ``kubectl create`` (``generateName``: each create is a new run). The
    CronJob fallback's launcher names it after its Job instead (one RayJob per scheduled run)."""
    return {"apiVersion": API_VERSION, "kind": "RayJob",
            "metadata": {"generateName": f"{opts.name}-", "labels": pods.labels(opts, "rayjob")},
            "spec": rayjob_spec(opts)}


def raycronjob(opts: RenderOptions, namespace: str | None = None) -> dict:
    """KubeRay >= 1.6, alpha: the operator must run with the ``RayCronJob`` feature gate. It has no
    concurrency policy and keeps every RayJob it created (the clusters are deleted)."""
    return {"apiVersion": API_VERSION, "kind": "RayCronJob",
            "metadata": pods.metadata(opts.name, opts, "raycronjob", namespace),
            "spec": {"schedule": opts.schedule, "timeZone": opts.time_zone, "jobTemplate": rayjob_spec(opts)}}


def config_map(opts: RenderOptions, namespace: str | None = None) -> dict:
    """The pipeline config, as written, under ``<name>.yaml``: the head pod mounts it at
    /etc/tokenmill. A new config takes effect at the next run (each run mounts it afresh)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": pods.metadata(opts.config_map, opts, "config", namespace),
            "data": {opts.config_key: opts.config_text}}
