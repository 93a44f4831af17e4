"""NetworkPolicies (``networking.k8s.io/v1``) that close one config's Ray pods to everyone but
their own cluster: a Ray head listens on the GCS (6379), the dashboard and Jobs API (8265), the
client server (10001) and ports Ray picks at start (raylet, object manager, workers, agents),
and without authentication any pod that reaches them can run code next to the object-store
credentials. The policies restrict ingress only (the pods still reach object stores, DNS and,
for the autoscaler, the Kubernetes API):

- the head (``ray.io/node-type: head``) takes connections on any port from this config's Ray
  pods (its workers: Ray's own ports are not fixed), and on the dashboard port only from this
  config's submitter pods (``ray job submit`` / ``logs --follow``) and from the KubeRay operator
  (it reads the job's status there), in ``--operator-namespace`` or any namespace;
- the workers take connections from this config's Ray pods only (head and workers talk to each
  other directly: object transfers, tasks, actors).

The pods are selected by the labels render puts on their templates (``app.kubernetes.io/instance``,
the config's name) and those KubeRay adds (``ray.io/node-type``, ``ray.io/is-ray-node``): a
RayJob's cluster name changes with every run and retry, so it cannot be named here. Traffic
from the node itself (kubelet probes) and ``kubectl port-forward`` are not affected. Only runs
of the same config share a policy; each cluster still has its own Ray token.
"""
from __future__ import annotations

from typing import Optional

from . import k8s_pods as pods
from .k8s_options import RenderOptions

API_VERSION = "networking.k8s.io/v1"
DASHBOARD_PORT = 8265
#: the KubeRay operator's pod label (its Helm chart: app.kubernetes.io/name: kuberay-operator)
OPERATOR_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}
INSTANCE = "app.kubernetes.io/instance"


def ray_pods(opts: RenderOptions, node_type: Optional[str] = None) -> dict:
    """A selector for this config's Ray pods (only KubeRay's pods have ``ray.io/is-ray-node``)."""
    labels = {INSTANCE: opts.name, "ray.io/is-ray-node": "yes"}
    if node_type:
        labels["ray.io/node-type"] = node_type
    return {"matchLabels": labels}


def _operator_peer(opts: RenderOptions) -> dict:
    namespaces = {"matchLabels": {"kubernetes.io/metadata.name": opts.operator_namespace}} \
        if opts.operator_namespace else {}
    return {"namespaceSelector": namespaces, "podSelector": {"matchLabels": dict(OPERATOR_LABELS)}}


def _dashboard_only() -> list[dict]:
    return [{"protocol": "TCP", "port": DASHBOARD_PORT}]


def _policy(opts: RenderOptions, name: str, selector: dict, ingress: list[dict], namespace: Optional[str]) -> dict:
    return {"apiVersion": API_VERSION, "kind": "NetworkPolicy",
            "metadata": pods.metadata(name, opts, "network-policy", namespace),
            "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": ingress}}


def head_policy(opts: RenderOptions, namespace: Optional[str] = None) -> dict:
    submitter = {"podSelector": {"matchLabels": {INSTANCE: opts.name, "app.kubernetes.io/component": "submitter"}}}
    ingress = [{"from": [{"podSelector": ray_pods(opts)}]},
               {"from": [submitter, _operator_peer(opts)], "ports": _dashboard_only()}]
    return _policy(opts, f"{opts.name}-ray-head", ray_pods(opts, "head"), ingress, namespace)


def worker_policy(opts: RenderOptions, namespace: Optional[str] = None) -> dict:
    ingress = [{"from": [{"podSelector": ray_pods(opts)}]}]
    return _policy(opts, f"{opts.name}-ray-workers", ray_pods(opts, "worker"), ingress, namespace)


def network_policies(opts: RenderOptions, namespace: Optional[str] = None) -> list[dict]:
    """The head's and the workers' policies (none with ``--no-network-policy``)."""
    if not opts.network_policy:
        return []
    return [head_policy(opts, namespace), worker_policy(opts, namespace)]
