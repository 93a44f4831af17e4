"""The pieces every rendered pod shares: labels, security contexts, resources, the writable
scratch volumes a read-only root filesystem needs, and object-store credentials by Secret
reference only.

Every container runs as a non-root user, without privilege escalation, with all capabilities
dropped, the runtime's default seccomp profile, and a read-only root filesystem (the Kubernetes
"restricted" Pod Security Standard). Ray can live with a read-only root when the places it
writes are volumes: its session folder, logs, sockets and spilled objects under /tmp/ray, and
the object store in /dev/shm. So each Ray pod gets /tmp as an emptyDir (on the node's disk) and
/dev/shm as a memory-backed emptyDir sized like the container's memory, and HOME points at /tmp
so the caches of Python libraries (Hugging Face, vLLM, Triton, kubectl's discovery cache) land
there too. An image that must write elsewhere (a runtime_env that pip-installs into
site-packages, say) is the exception: ``--writable-root`` keeps the root filesystem writable for
the Ray containers and changes nothing else.
"""
from __future__ import annotations

from typing import Optional

from .k8s_options import RenderOptions

TMP_VOLUME = "tmp"
SHM_VOLUME = "dshm"
GPU_RESOURCE = "nvidia.com/gpu"


def labels(opts: Optional[RenderOptions], component: str) -> dict:
    out = {"app.kubernetes.io/name": "tokenmill", "app.kubernetes.io/component": component}
    if opts is not None:
        out["app.kubernetes.io/instance"] = opts.name
    out["app.kubernetes.io/part-of"] = "tokenmill"
    return out


def metadata(name: str, opts: Optional[RenderOptions], component: str, namespace: Optional[str] = None) -> dict:
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = labels(opts, component)
    return meta


def pod_security(opts: RenderOptions) -> dict:
    return {"runAsNonRoot": True, "runAsUser": opts.run_as_user, "runAsGroup": opts.run_as_group,
            "fsGroup": opts.run_as_group, "seccompProfile": {"type": "RuntimeDefault"}}


def container_security(read_only_root: bool = True) -> dict:
    return {"allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": read_only_root,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


def resources(cpus: str, memory: str, gpus: int = 0, requests: Optional[tuple[str, str]] = None) -> dict:
    """Requests equal to limits unless ``requests`` (cpu, memory) says less: Ray sizes itself from
    the limits, and a Ray pod that gets less than it was told runs out of memory, not slower."""
    limits = {"cpu": cpus, "memory": memory}
    req = {"cpu": requests[0], "memory": requests[1]} if requests else dict(limits)
    if gpus:
        limits[GPU_RESOURCE] = gpus
        req[GPU_RESOURCE] = gpus
    return {"requests": req, "limits": limits}


def scratch_volumes(shm_size: Optional[str] = None) -> list[dict]:
    """/tmp always; /dev/shm (memory-backed, at most ``shm_size``) for Ray's object store."""
    vols = [{"name": TMP_VOLUME, "emptyDir": {}}]
    if shm_size:
        vols.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}})
    return vols


def scratch_mounts(shm: bool) -> list[dict]:
    mounts = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    if shm:
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    return mounts


def home_env() -> list[dict]:
    return [{"name": "HOME", "value": "/tmp"}]


def secret_env(opts: RenderOptions) -> list[dict]:
    """Object-store credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...)
    come from a Secret by reference; optional, so clusters that grant access through the pod's
    identity (IRSA, Workload Identity) need no Secret at all."""
    if not opts.object_store_secret:
        return []
    return [{"secretRef": {"name": opts.object_store_secret, "optional": True}}]


def pod_spec(opts: RenderOptions, containers: list[dict], volumes: list[dict], *,
             restart_policy: Optional[str] = None, service_account: Optional[str] = None,
             automount_token: Optional[bool] = False, tolerations: Optional[list] = None) -> dict:
    spec: dict = {}
    if service_account:
        spec["serviceAccountName"] = service_account
    if automount_token is not None:
        spec["automountServiceAccountToken"] = automount_token
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    spec["securityContext"] = pod_security(opts)
    if opts.image_pull_secret:
        spec["imagePullSecrets"] = [{"name": opts.image_pull_secret}]
    if tolerations:
        spec["tolerations"] = tolerations
    spec["containers"] = containers
    spec["volumes"] = volumes
    return spec


def template(opts: RenderOptions, component: str, spec: dict) -> dict:
    return {"metadata": {"labels": labels(opts, component)}, "spec": spec}
