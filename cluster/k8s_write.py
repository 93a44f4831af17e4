"""Writing manifests: YAML as ``kubectl`` writes it (block strings for configs and scripts), one
multi-document stream for stdout, or a kustomize overlay folder (one file per object kind) over a
shared base that holds the CronJob fallback's RBAC and launcher script.

Layout (``tokenmill k8s render CONFIG --out k8s/overlays/en``)::

    k8s/base/                kustomization.yaml, rbac.yaml, launcher.yaml   (written when missing)
    k8s/overlays/en/         kustomization.yaml, config.yaml, networkpolicy.yaml and either
                             raycronjob.yaml, or rayjob-template.yaml and cronjob.yaml

An overlay's ``namespace:`` places the base's objects too, so overlays in different namespaces each
get their own RBAC. Files are written whole and the same options give the same bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

from . import k8s_cron, k8s_net, k8s_ray
from .k8s_options import DEFAULT_NAMESPACE, RenderOptions

KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"
#: every file name render may write in an overlay (a re-render in the other mode removes the rest)
OVERLAY_FILES = ("kustomization.yaml", "config.yaml", "networkpolicy.yaml", "raycronjob.yaml", "rayjob-template.yaml",
                 "cronjob.yaml")
DEFAULT_BASE = "../../base"


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(obj: dict) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def dump_all(objs: list[dict]) -> str:
    return "".join("---\n" + dump(o) for o in objs)


def schedule_objects(opts: RenderOptions, namespace: Optional[str]) -> list[dict]:
    """The RayCronJob, or the RayJob template and the CronJob that launches it."""
    if opts.cron_mode == "raycronjob":
        return [k8s_ray.raycronjob(opts, namespace)]
    return [k8s_cron.rayjob_template(opts, namespace), k8s_cron.cronjob(opts, namespace)]


def objects(opts: RenderOptions, namespace: Optional[str]) -> list[dict]:
    """This config's objects (not the shared ones), in the order they are applied: the network
    policies before anything that makes pods."""
    return ([k8s_ray.config_map(opts, namespace)] + k8s_net.network_policies(opts, namespace)
            + schedule_objects(opts, namespace))


def stream(opts: RenderOptions) -> str:
    """Everything one ``kubectl apply -f -`` needs, namespaced."""
    shared = k8s_cron.shared_objects(opts.namespace) if opts.cron_mode == "cronjob" else []
    return dump_all(shared + objects(opts, opts.namespace))


def _header(text: str) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in text.splitlines())


def kustomization(resources: list[str], namespace: str, header: str) -> str:
    return _header(header) + dump({"apiVersion": KUSTOMIZE_API, "kind": "Kustomization",
                                   "namespace": namespace, "resources": resources})


def base_files() -> dict[str, str]:
    shared = k8s_cron.shared_objects()
    head = ("The CronJob fallback's shared objects (tokenmill k8s render writes this folder when an overlay\n"
            "needs it and it is missing): the launcher's ServiceAccount, a Role that may only create and\n"
            "get RayJobs, their RoleBinding, and the launcher script. An overlay's namespace places them.")
    return {"kustomization.yaml": kustomization(["rbac.yaml", "launcher.yaml"], DEFAULT_NAMESPACE, head),
            "rbac.yaml": dump_all(shared[:3]), "launcher.yaml": dump_all(shared[3:])}


def overlay_files(opts: RenderOptions, source: str, base: str = DEFAULT_BASE) -> dict[str, str]:
    files = {"config.yaml": [k8s_ray.config_map(opts, None)]}
    policies = k8s_net.network_policies(opts, None)
    if policies:
        files["networkpolicy.yaml"] = policies
    schedule = schedule_objects(opts, None)
    if opts.cron_mode == "raycronjob":
        files["raycronjob.yaml"] = schedule
        resources = []
    else:
        files.update({"rayjob-template.yaml": schedule[:1], "cronjob.yaml": schedule[1:]})
        resources = [base]
    head = (f"{opts.name}: written by `tokenmill k8s render` from {source} ({opts.cron_mode} mode,\n"
            f"schedule {opts.schedule!r} {opts.time_zone}). Render again rather than edit these files;\n"
            "to change them for one cluster, patch them in an overlay of this folder.")
    out = {"kustomization.yaml": kustomization(resources + list(files), opts.namespace, head)}
    out.update({name: dump_all(objs) for name, objs in files.items()})
    return out


def write_overlay(opts: RenderOptions, out: Path, source: str, base: str = DEFAULT_BASE) -> tuple[list[Path], list[str]]:
    """Write the overlay (and the base when it needs one that is missing): the paths written, and
    notes for the user (a base that is not the one this version writes is left alone)."""
    written, notes = [], []
    files = overlay_files(opts, source, base)
    out.mkdir(parents=True, exist_ok=True)
    for stale in OVERLAY_FILES:
        if stale not in files and (out / stale).is_file():
            (out / stale).unlink()
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    base_dir = out / base
    if opts.cron_mode != "cronjob":
        return written, notes
    if not (base_dir / "kustomization.yaml").exists():
        base_dir.mkdir(parents=True, exist_ok=True)
        for name, text in base_files().items():
            (base_dir / name).write_text(text, encoding="utf-8")
            written.append(base_dir / name)
    elif any(not (base_dir / name).is_file() or (base_dir / name).read_text(encoding="utf-8") != text
             for name, text in base_files().items()):
        notes.append(f"{base_dir} is not the base this version of tokenmill writes (edited, or from another "
                     "version); left as it is: delete it and render again to replace it")
    return written, notes
