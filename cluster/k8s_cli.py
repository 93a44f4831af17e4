"""``tokenmill k8s render``: Kubernetes manifests (KubeRay RayJob, RayCronJob or CronJob) for one config."""
from __future__ import annotations


def add_parser(sub) -> None:
    """Adds ``k8s`` to the ``tokenmill`` command (its subcommands set ``func``)."""
