"""Offline validation of Kubernetes manifests, strictly: a misspelled field or a wrong type fails.

- KubeRay objects (``ray.io/v1``) against KubeRay v1.7.0's CRDs (../shared/k8s/), made strict by
  adding ``additionalProperties: false`` to every object schema that lists ``properties`` and does
  not preserve unknown fields (the API server would silently prune a misspelled field instead).
  Their ``metadata`` and every embedded pod template are also checked against the core schemas
  (the CRDs leave ``metadata`` open), and their names against KubeRay's length limits.
- Core objects (CronJob, ConfigMap, ServiceAccount, Role, RoleBinding, ...) with
  ``kubernetes-validate`` in strict mode, for each Kubernetes version in ``K8S_VERSIONS``.
- KubeRay's own rules that its CRDs cannot express (``utils/validation.go``), for what the
  manifests use: token authentication needs ``rayVersion`` >= 2.52.0, and not for RayJobs with
  Kubernetes-delegated tokens.
- A ConfigMap that carries a RayJob manifest (the CronJob fallback's) has it validated too.

``security_problems`` is the pod security check: non-root, no privilege escalation, all
capabilities dropped, read-only root filesystem, CPU and memory requests and limits (GPUs in
limits), no host namespaces or hostPath, and no inline secrets anywhere.

``isolation_problems`` checks a whole set of manifests: every Ray cluster authenticates with a
token, and its NetworkPolicies let no pod but its own reach the head or the workers. It runs the
NetworkPolicy rules (``ingress_allowed``) on the pods KubeRay would make from the templates,
with the labels KubeRay adds (``kuberay_pods``).
"""
from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

SHARED_K8S = Path(__file__).resolve().parents[2] / "shared" / "k8s"
CRD_DIR = SHARED_K8S / "kuberay-v1.7.0-crds"
#: the oldest Kubernetes the manifests target (CronJob timeZone, Job podFailurePolicy are GA) and a current one
K8S_VERSIONS = ("1.31", "1.34")
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayCronJob": "ray.io_raycronjobs.yaml",
             "RayCluster": "ray.io_rayclusters.yaml"}
#: KubeRay v1.7.0's own name limits (utils/constant.go), DNS-1035 labels
MAX_NAME = {"RayCluster": 53, "RayJob": 47, "RayCronJob": 36}
GENERATED_SUFFIX = 5   # what the API server appends to a generateName
#: KubeRay v1.7.0 refuses authOptions.mode token below this rayVersion (utils/validation.go)
MIN_RAY_FOR_AUTH = (2, 52, 0)


def strictify(schema: dict) -> dict:
    """The schema with ``additionalProperties: false`` wherever properties are listed and unknown
    fields are not preserved; ``x-kubernetes-int-or-string`` spelled out where it stands alone."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and not node.get("x-kubernetes-preserve-unknown-fields")
                    and "additionalProperties" not in node):
                node["additionalProperties"] = False
            if node.get("x-kubernetes-int-or-string") and "anyOf" not in node and "type" not in node:
                node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


@functools.cache
def crd_schema(kind: str, strict: bool = True) -> dict:
    crd = yaml.load((CRD_DIR / CRD_FILES[kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = version["schema"]["openAPIV3Schema"]
    return strictify(schema) if strict else schema


@functools.cache
def _crd_validator(kind: str, strict: bool) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd_schema(kind, strict))


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def crd_errors(obj: dict, strict: bool = True) -> list[str]:
    """Schema errors of a KubeRay object against its v1.7.0 CRD."""
    return [f"{_where(e)}: {e.message}"
            for e in sorted(_crd_validator(obj["kind"], strict).iter_errors(obj), key=lambda e: list(e.absolute_path))]


def core_errors(obj: dict) -> list[str]:
    out = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            out.append(f"k8s {version}: {_where(e)}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            out.append(f"k8s {version}: {e.message}")
    return out


def ray_pod_templates(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod template) of a RayJob, RayCronJob or RayCluster."""
    spec = obj.get("spec") or {}
    if obj["kind"] == "RayCronJob":
        spec, prefix = spec.get("jobTemplate") or {}, "spec.jobTemplate"
    else:
        prefix = "spec"
    cluster = spec if obj["kind"] == "RayCluster" else spec.get("rayClusterSpec") or {}
    cprefix = prefix if obj["kind"] == "RayCluster" else f"{prefix}.rayClusterSpec"
    if "template" in (cluster.get("headGroupSpec") or {}):
        yield f"{cprefix}.headGroupSpec.template", cluster["headGroupSpec"]["template"]
    for i, g in enumerate(cluster.get("workerGroupSpecs") or []):
        yield f"{cprefix}.workerGroupSpecs[{i}].template", g.get("template") or {}
    if spec.get("submitterPodTemplate"):
        yield f"{prefix}.submitterPodTemplate", spec["submitterPodTemplate"]


def _name_errors(obj: dict) -> list[str]:
    meta = obj.get("metadata") or {}
    limit = MAX_NAME.get(obj["kind"])
    name = meta.get("name")
    if name is None and meta.get("generateName"):
        name = meta["generateName"] + "x" * GENERATED_SUFFIX
    if name is None:
        return ["metadata: neither name nor generateName"]
    errors = []
    if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", name):
        errors.append(f"metadata.name: {name!r} is not a DNS-1035 label (KubeRay requires one)")
    if limit and len(name) > limit:
        errors.append(f"metadata.name: {name!r} is longer than KubeRay's {limit} characters for a {obj['kind']}")
    return errors


def _version(text: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    return tuple(int(p or 0) for p in m.groups()) if m else ()


def kuberay_rule_errors(obj: dict) -> list[str]:
    """What KubeRay v1.7.0's ValidateRayClusterSpec / ValidateRayJobSpec refuse about
    ``authOptions`` (the CRD only lists the fields)."""
    out = []
    for where, spec in _clusters(obj):
        auth = spec.get("authOptions") or {}
        token = auth.get("mode") == "token"
        if token and not spec.get("rayVersion"):
            out.append(f"{where}.authOptions: mode token needs rayVersion (Ray >= 2.52.0)")
        elif token and not _version(spec["rayVersion"]) >= MIN_RAY_FOR_AUTH:
            out.append(f"{where}.authOptions: mode token needs Ray >= 2.52.0, rayVersion is {spec['rayVersion']}")
        if auth.get("enableK8sTokenAuth") and (not token or obj.get("kind") != "RayCluster"):
            out.append(f"{where}.authOptions.enableK8sTokenAuth: needs mode token, and not in a RayJob")
    return out


def errors(obj: dict) -> list[str]:
    """Every problem found in one object (empty: valid)."""
    if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
        return ["not a Kubernetes object (no apiVersion/kind)"]
    if obj["apiVersion"].startswith("ray.io/"):
        if obj["apiVersion"] != "ray.io/v1" or obj["kind"] not in CRD_FILES:
            return [f"unknown KubeRay object {obj['apiVersion']} {obj['kind']}"]
        out = crd_errors(obj) + _name_errors(obj) + kuberay_rule_errors(obj)
        meta = dict(obj.get("metadata") or {})
        meta.setdefault("name", "placeholder")
        # the CRDs leave metadata and the pod templates' metadata open: the core schemas check them
        out += [f"metadata: {m}" for m in core_errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})]
        for where, tpl in ray_pod_templates(obj):
            wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "placeholder"}, "template": tpl}
            out += [f"{where}: {m}" for m in core_errors(wrapper)]
        return out
    out = core_errors(obj)
    for inner in embedded_objects(obj):
        out += [f"(embedded {inner['kind']}) {m}" for m in errors(inner)]
    return out


def embedded_objects(obj: dict) -> list[dict]:
    """Kubernetes objects a ConfigMap carries as YAML (the CronJob fallback's RayJob)."""
    found = []
    if obj.get("kind") == "ConfigMap":
        for key, text in (obj.get("data") or {}).items():
            if key.endswith(".yaml"):
                for doc in yaml.safe_load_all(text):
                    if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                        found.append(doc)
    return found


def kustomize(folder: Path) -> list[dict]:
    """``kubectl kustomize FOLDER``, parsed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl not found on PATH (kubectl kustomize builds the overlays)")
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {folder} failed: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


# --- the security check ---

_SECRET_NAME = re.compile(r"(?i)(secret|passw|token|api_?key|access_?key|credential|private_?key)")
_SECRET_TEXT = [re.compile(p) for p in (r"AKIA[0-9A-Z]{16}", r"(?i)aws_secret_access_key\s*[:=]\s*\S",
                                        r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"(?i)password\s*[:=]\s*\S")]


def pod_templates(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod template) of every pod an object would create (not those of embedded manifests)."""
    kind = obj.get("kind")
    name = f"{kind}/{(obj.get('metadata') or {}).get('name') or (obj.get('metadata') or {}).get('generateName')}"
    spec = obj.get("spec") or {}
    if str(obj.get("apiVersion", "")).startswith("ray.io/"):
        for where, tpl in ray_pod_templates(obj):
            yield f"{name} {where}", tpl
    elif kind == "CronJob":
        yield f"{name} spec.jobTemplate.spec.template", spec["jobTemplate"]["spec"]["template"]
    elif kind in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        yield f"{name} spec.template", spec["template"]
    elif kind == "Pod":
        yield name, {"metadata": obj.get("metadata"), "spec": spec}


def _container_problems(where: str, c: dict, pod_sc: dict, check_resources: bool = True) -> list[str]:
    out = []
    sc = c.get("securityContext") or {}
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{where}: allowPrivilegeEscalation is not false")
    if sc.get("privileged"):
        out.append(f"{where}: privileged")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{where}: capabilities not all dropped")
    if caps.get("add"):
        out.append(f"{where}: adds capabilities {caps['add']}")
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append(f"{where}: root filesystem not read-only")
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        out.append(f"{where}: runAsNonRoot is not true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        out.append(f"{where}: runs as uid 0")
    if check_resources:
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if not (res.get(part) or {}).get(r):
                    out.append(f"{where}: no {r} {part[:-1]}")
        gpus = {k for part in ("requests", "limits") for k in (res.get(part) or {}) if k.endswith("/gpu")}
        for k in gpus:
            if k not in (res.get("limits") or {}):
                out.append(f"{where}: {k} requested without a limit")
    for e in c.get("env") or []:
        if "value" in e and _SECRET_NAME.search(e.get("name", "")) and e.get("value"):
            out.append(f"{where}: env {e['name']} has an inline value (use valueFrom.secretKeyRef)")
    return out


def security_problems(objs: list[dict]) -> list[str]:
    """Every violation of the pod security check over the objects (empty: they pass)."""
    out = []
    for obj in objs:
        meta = obj.get("metadata") or {}
        label = f"{obj.get('kind')}/{meta.get('name') or meta.get('generateName')}"
        if obj.get("kind") == "Secret":
            out.append(f"{label}: a Secret in the manifests (reference one instead)")
        for key, text in ((obj.get("data") or {}).items() if obj.get("kind") == "ConfigMap" else ()):
            for pattern in _SECRET_TEXT:
                if pattern.search(str(text)):
                    out.append(f"{label} data.{key}: looks like an inline credential ({pattern.pattern})")
        for where, tpl in pod_templates(obj):
            spec = tpl.get("spec") or {}
            pod_sc = spec.get("securityContext") or {}
            for flag in ("hostNetwork", "hostPID", "hostIPC"):
                if spec.get(flag):
                    out.append(f"{where}: {flag}")
            for v in spec.get("volumes") or []:
                if "hostPath" in v:
                    out.append(f"{where}: hostPath volume {v.get('name')}")
            if not spec.get("containers"):
                out.append(f"{where}: no containers")
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                out += _container_problems(f"{where} container {c.get('name')}", c, pod_sc)
        # KubeRay injects the autoscaler into the head pod from these options
        for cluster_where, cluster in _clusters(obj):
            if cluster.get("enableInTreeAutoscaling"):
                head_sc = (((cluster.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}).get(
                    "securityContext") or {}
                opts = cluster.get("autoscalerOptions") or {}
                out += _container_problems(f"{label} {cluster_where}.autoscalerOptions", opts, head_sc)
        for inner in embedded_objects(obj):
            out += [f"{label} (embedded) {p}" for p in security_problems([inner])]
    return out


def _clusters(obj: dict) -> Iterator[tuple[str, dict]]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "RayCluster":
        yield "spec", spec
    elif obj.get("kind") == "RayJob" and spec.get("rayClusterSpec"):
        yield "spec.rayClusterSpec", spec["rayClusterSpec"]
    elif obj.get("kind") == "RayCronJob" and (spec.get("jobTemplate") or {}).get("rayClusterSpec"):
        yield "spec.jobTemplate.rayClusterSpec", spec["jobTemplate"]["rayClusterSpec"]


# --- the isolation check: authentication and NetworkPolicies ---

@dataclass(frozen=True)
class Pod:
    """A pod as NetworkPolicies see it: its namespace and labels."""

    namespace: str
    labels: dict = field(default_factory=dict)


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects these labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _peer_admits(peer: dict, src: Pod, policy_ns: str) -> bool:
    if "ipBlock" in peer:        # pods are not matched by address here
        return False
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    ns_ok = src.namespace == policy_ns if ns_sel is None else selects(
        ns_sel, {"kubernetes.io/metadata.name": src.namespace})
    return ns_ok and (pod_sel is None or selects(pod_sel, src.labels))


def _port_admits(ports: list | None, port: int) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in p:
            return True
        if isinstance(p["port"], int) and p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def ingress_allowed(policies: list[dict], src: Pod, dst: Pod, port: int) -> bool:
    """Whether ``src`` may open a TCP connection to ``dst:port`` under these NetworkPolicies (the
    Kubernetes semantics: a pod no Ingress policy selects takes everything; a selected pod takes
    what any rule of any selecting policy allows)."""
    selecting = [p for p in policies if p.get("kind") == "NetworkPolicy"
                 and (p.get("metadata") or {}).get("namespace", dst.namespace) == dst.namespace
                 and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
                 and selects(p["spec"].get("podSelector") or {}, dst.labels)]
    if not selecting:
        return True
    return any(_port_admits(rule.get("ports"), port)
               and (not rule.get("from") or any(_peer_admits(peer, src, dst.namespace) for peer in rule["from"]))
               for p in selecting for rule in p["spec"].get("ingress") or [])


def kuberay_pods(obj: dict, namespace: str, cluster: str = "run-x1") -> dict[str, Pod]:
    """The pods KubeRay v1.7.0 makes from a RayJob or RayCronJob, with the labels it adds
    (common/pod.go labelPod; the submitter's from rayjob_controller.go): 'head', one per worker
    group ('worker-<group>') and 'submitter'."""
    spec = obj.get("spec") or {}
    job = (spec.get("jobTemplate") or {}) if obj.get("kind") == "RayCronJob" else spec
    ray = job.get("rayClusterSpec") or {}

    def ray_pod(template: dict, node_type: str, group: str) -> Pod:
        labels = {"ray.io/is-ray-node": "yes", "app.kubernetes.io/name": "kuberay",
                  "app.kubernetes.io/created-by": "kuberay-operator"}
        labels.update((template.get("metadata") or {}).get("labels") or {})
        labels.update({"ray.io/cluster": cluster, "ray.io/node-type": node_type, "ray.io/group": group})
        return Pod(namespace, labels)

    pods = {"head": ray_pod(ray["headGroupSpec"]["template"], "head", "headgroup")}
    for g in ray.get("workerGroupSpecs") or []:
        pods[f"worker-{g['groupName']}"] = ray_pod(g["template"], "worker", g["groupName"])
    sub = dict(((job.get("submitterPodTemplate") or {}).get("metadata") or {}).get("labels") or {})
    sub.update({"ray.io/originated-from-cr-name": cluster.rsplit("-", 1)[0], "ray.io/originated-from-crd": "RayJob",
                "app.kubernetes.io/created-by": "kuberay-operator"})
    pods["submitter"] = Pod(namespace, sub)
    return pods


#: Ray's ports on a head that outsiders must not reach: GCS, dashboard and Jobs API, client
#: server, metrics, dashboard agent, and one in Ray's default worker port range
RAY_PORTS = (6379, 8265, 10001, 8080, 52365, 12000)


def strangers(namespace: str) -> tuple[Pod, ...]:
    """Pods that are not the cluster's: one beside it, one in another namespace."""
    return Pod(namespace, {"app": "stranger"}), Pod(f"not-{namespace}", {"app": "stranger"})


def _ray_objects(objs: list[dict]) -> Iterator[dict]:
    for obj in objs:
        if obj.get("kind") in ("RayJob", "RayCronJob"):
            yield obj
        yield from (inner for inner in embedded_objects(obj) if inner.get("kind") in ("RayJob", "RayCronJob"))


def isolation_problems(objs: list[dict], namespace: str = "tokenmill") -> list[str]:
    """Every Ray cluster in the manifests authenticates with a token, and no pod outside it (one
    in its namespace or in another) reaches its head or workers on any of Ray's ports."""
    out = []
    policies = [o for o in objs if o.get("kind") == "NetworkPolicy"]
    for obj in _ray_objects(objs):
        meta = obj.get("metadata") or {}
        label = f"{obj['kind']}/{meta.get('name') or meta.get('generateName')}"
        ns = meta.get("namespace") or namespace
        for where, spec in _clusters(obj):
            if (spec.get("authOptions") or {}).get("mode") != "token":
                out.append(f"{label} {where}: the Ray head does not authenticate (authOptions.mode is not token)")
        for role, pod in kuberay_pods(obj, ns).items():
            if role == "submitter":
                continue
            open_to = [f"{s.namespace}/{s.labels}:{port}" for s in strangers(ns) for port in RAY_PORTS
                       if ingress_allowed(policies, s, pod, port)]
            if open_to:
                out.append(f"{label} {role}: reachable from pods outside the cluster ({', '.join(open_to[:3])} ...)")
    return out
