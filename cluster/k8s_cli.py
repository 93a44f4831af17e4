"""``tokenmill k8s render``: Kubernetes manifests (KubeRay RayJob, RayCronJob or CronJob) for one config.

One config, one schedule: a team with 30 languages renders 30 configs into 30 overlays. The config
is validated first (a bad one exits 2 with the same message as ``tokenmill run``; its inputs are
not looked for, they live on the cluster's object store) and travels unchanged into a ConfigMap;
a config with ``extends:`` travels merged, since the pod sees one file. Options are checked
before anything is written (a bad one exits 2 naming the option).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import timedelta
from importlib import metadata as _metadata
from pathlib import Path

import yaml

from .k8s_options import (
    DEFAULT_IMAGE,
    DEFAULT_LAUNCHER_IMAGE,
    DEFAULT_LOCK_WAIT,
    DEFAULT_NAMESPACE,
    DEFAULT_SCHEDULE,
    DEFAULT_SECRET,
    DEFAULT_TIME_ZONE,
    KUBERAY_VERSION,
    MIN_RAY_FOR_AUTH,
    Group,
    OptionError,
    RenderOptions,
    check_image,
    check_name,
    check_namespace,
    check_quantity,
    check_ray_version,
    check_secret_name,
    check_time_zone,
    parse_cron,
    ray_version_tuple,
    resource_name,
)
from .k8s_write import DEFAULT_BASE, stream, write_overlay


def add_parser(sub) -> None:
    """Adds ``k8s`` to the ``tokenmill`` command (its subcommands set ``func``)."""
    k = sub.add_parser("k8s", help="Kubernetes manifests for a config (KubeRay RayJob on a schedule)",
                       description="Kubernetes manifests for running configs on KubeRay.")
    ksub = k.add_subparsers(dest="k8s_command", required=True)
    r = ksub.add_parser(
        "render", help="write the manifests of one config's schedule",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the manifests that run CONFIG on a schedule on KubeRay: a ConfigMap with the config "
        "and a RayCronJob (--cron-mode raycronjob: KubeRay >= 1.6 with its RayCronJob feature gate) or a "
        "CronJob whose pod creates a RayJob and waits for it (--cron-mode cronjob, the default: no feature gate). "
        "Each run's Ray head asks for the cluster's token (KubeRay authOptions) and NetworkPolicies admit only the "
        f"cluster's own pods. Written against KubeRay {KUBERAY_VERSION}'s CRDs.",
        epilog="examples:\n"
        "  tokenmill k8s render configs/k8s/en.yaml | kubectl apply -f -\n"
        "  tokenmill k8s render configs/k8s/de.yaml --schedule '30 1 * * *' --time-zone Europe/Berlin "
        "--out k8s/overlays/de\n"
        "  kubectl apply -k k8s/overlays/de")
    r.add_argument("config", help="pipeline YAML (its input and output should be object-store URLs)")
    r.add_argument("--out", metavar="DIR", help="write a kustomize overlay here (and its base at DIR/--base when "
                   "missing) instead of printing the manifests")
    r.add_argument("--base", default=DEFAULT_BASE, metavar="PATH",
                   help=f"the shared base, relative to --out (default {DEFAULT_BASE}; cronjob mode only)")
    r.add_argument("--name", help="name of the objects (default: the config's name as a DNS label; at most 30 "
                   "characters)")
    r.add_argument("--namespace", default=DEFAULT_NAMESPACE, metavar="NS", help=f"(default {DEFAULT_NAMESPACE})")
    s = r.add_argument_group("schedule")
    s.add_argument("--schedule", default=DEFAULT_SCHEDULE, metavar="CRON",
                   help=f"five cron fields or @daily etc. (default {DEFAULT_SCHEDULE!r})")
    s.add_argument("--time-zone", default=DEFAULT_TIME_ZONE, metavar="TZ",
                   help=f"IANA time zone of the schedule (default {DEFAULT_TIME_ZONE})")
    s.add_argument("--cron-mode", choices=["cronjob", "raycronjob"], default="cronjob",
                   help="cronjob (default): a batch/v1 CronJob that launches a RayJob (concurrencyPolicy Forbid, "
                   "history of failed runs); raycronjob: KubeRay's RayCronJob (alpha, feature gate RayCronJob)")
    s.add_argument("--deadline", type=int, default=6 * 3600, metavar="SECONDS",
                   help="a run that has not finished after this fails (RayJob activeDeadlineSeconds; default 21600)")
    s.add_argument("--retries", type=int, default=1, metavar="N", help="a failed run is tried again this many times, each on a "
                   "new cluster, keeping what it committed (RayJob backoffLimit; default 1)")
    s.add_argument("--ttl", type=int, default=600, metavar="SECONDS",
                   help="keep the finished run's cluster this long (ttlSecondsAfterFinished; default 600)")
    s.add_argument("--starting-deadline", type=int, default=3600, metavar="SECONDS",
                   help="cronjob mode: a run that could not start this long after its time is skipped (default 3600)")
    s.add_argument("--lock-wait", type=int, metavar="SECONDS",
                   help="a run waits this long for another run's lease on the output, then exits 75 (tokenmill run "
                   "--lock-wait; a retry of the same run takes its own lease over at once; default: the config's "
                   f"output.lock_wait_seconds, or {DEFAULT_LOCK_WAIT})")
    i = r.add_argument_group("images and credentials")
    i.add_argument("--image", default=DEFAULT_IMAGE,
                   help=f"image with tokenmill and ray[default] for every Ray pod (default {DEFAULT_IMAGE})")
    i.add_argument("--launcher-image", default=DEFAULT_LAUNCHER_IMAGE, metavar="IMAGE",
                   help=f"cronjob mode: any image with kubectl and sh (default {DEFAULT_LAUNCHER_IMAGE})")
    i.add_argument("--image-pull-secret", metavar="NAME", help="a docker-registry Secret for private images")
    i.add_argument("--object-store-secret", default=DEFAULT_SECRET, metavar="NAME",
                   help=f"Secret whose keys become the Ray pods' environment (AWS_ACCESS_KEY_ID ...), optional at "
                   f"run time; '' for none (default {DEFAULT_SECRET})")
    i.add_argument("--writable-root", action="store_true",
                   help="Ray containers keep a writable root filesystem (for images that write outside /tmp)")
    i.add_argument("--ray-version", metavar="VERSION",
                   help="the Ray version of --image (rayVersion; default: this machine's Ray); token authentication "
                   "needs 2.52.0 or later")
    n = r.add_argument_group("access to the Ray clusters")
    n.add_argument("--ray-auth", choices=["token", "disabled"], default="token",
                   help="token (default): the head accepts only requests with the cluster's Ray token (KubeRay "
                   "authOptions; Ray >= 2.52); disabled: no authentication (images with an older Ray)")
    n.add_argument("--ray-auth-secret", metavar="NAME",
                   help="a Secret of yours with the token under the key auth_token (default: KubeRay makes one per "
                   "cluster and deletes it with the cluster)")
    n.add_argument("--no-network-policy", action="store_true",
                   help="no NetworkPolicies (default: the Ray pods take connections only from their own cluster, "
                   "its submitter and the KubeRay operator)")
    n.add_argument("--operator-namespace", metavar="NS",
                   help="the KubeRay operator's namespace, the only one whose operator may reach the heads' dashboard "
                   "port (default: an operator pod in any namespace)")
    z = r.add_argument_group("sizing (Kubernetes quantities: 8, 500m, 32Gi)")
    z.add_argument("--head-cpus", default="2", metavar="QTY", help="the head runs the driver, not work (default 2)")
    z.add_argument("--head-memory", default="8Gi", metavar="QTY", help="(default 8Gi)")
    z.add_argument("--min-cpu-workers", type=int, metavar="N", default=1, help="(default 1)")
    z.add_argument("--max-cpu-workers", type=int, metavar="N", default=8, help="(default 8)")
    z.add_argument("--worker-cpus", default="8", metavar="QTY", help="per CPU worker (default 8)")
    z.add_argument("--worker-memory", default="32Gi", metavar="QTY", help="per CPU worker (default 32Gi)")
    z.add_argument("--max-gpu-workers", type=int, metavar="N", help="GPU workers (from 0) for GPU stages (default: enough for "
                   "the GPU stage with the most replicas (resources.concurrency); 0 without GPU stages: no GPU group)")
    z.add_argument("--gpus-per-worker", type=int, metavar="N", help="default: the most GPUs one replica of a stage asks for "
                   "(num_gpus, or tensor parallelism of an LLM stage), at least 1")
    z.add_argument("--gpu-worker-cpus", default="8", metavar="QTY", help="per GPU worker (default 8)")
    z.add_argument("--gpu-worker-memory", default="64Gi", metavar="QTY", help="per GPU worker (default 64Gi)")
    z.add_argument("--idle-timeout", type=int, default=300, metavar="SECONDS",
                   help="the autoscaler removes a worker idle this long (default 300)")
    r.set_defaults(func=_render)


def _raw_config(path: Path) -> tuple[str, dict]:
    """The config's text as the pod will read it, and its data: the file as written, or with
    ``extends:`` its chain merged (paths are left as written: the pod has no other files)."""
    from tokenmill.engine.config import read_yaml_with_extends

    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or "extends" not in data:
        return text, data
    merged = read_yaml_with_extends(path, rebase=False)
    head = f"# {path.name} with its extends: chain merged by tokenmill k8s render\n"
    return head + yaml.safe_dump(merged, sort_keys=False, default_flow_style=False, allow_unicode=True), merged


def _local_paths(data: dict) -> list[tuple[str, str]]:
    """Paths the pods cannot see: anything not an object-store URL (key, path)."""
    from tokenmill.engine.stage import get_stage_class

    found = []
    inp, out = data.get("input") or {}, data.get("output") or {}
    paths = inp.get("paths") if isinstance(inp, dict) else None
    for j, p in enumerate([paths] if isinstance(paths, str) else paths or []):
        found.append((f"input.paths[{j}]", p))
    if isinstance(out, dict):
        found.append(("output.path", out.get("path")))
    langs = data.get("languages") or {}
    if isinstance(langs, dict) and langs.get("dir"):
        found.append(("languages.dir", langs["dir"]))
    for i, st in enumerate(data.get("stages") or []):
        if isinstance(st, dict):
            try:
                keys = get_stage_class(str(st.get("type"))).path_params(st)
            except (KeyError, ImportError, AttributeError, TypeError):
                keys = ()
            found += [(f"stages[{i}].{k}", st[k]) for k in keys if isinstance(st.get(k), str)]
    return [(k, p) for k, p in found if isinstance(p, str) and "://" not in p]


def gpu_demand(pipeline) -> tuple[int, int]:
    """(the most GPUs one replica of a stage asks for, the most all replicas of one stage ask
    for); (0, 0): the config needs no GPU."""
    per_replica = total = 0
    for rs in pipeline.stages:
        r = rs.resources
        step = rs.build(pipeline.languages).llm_step() if rs.generates else None
        if step is not None:   # an LLM engine step: one GPU per tensor-parallel rank
            need = int(step.engine_kwargs.get("tensor_parallel_size", r.tensor_parallel_size))
        else:
            need = math.ceil(r.num_gpus * r.tensor_parallel_size) if r.num_gpus else 0
        per_replica = max(per_replica, need)
        total = max(total, need * r.concurrency)
    return per_replica, total


def _count(value: int, option: str, low: int = 0) -> int:
    if value < low:
        raise OptionError(option, f"expected a whole number >= {low}, got {value}")
    return value


def _ray_version() -> str:
    try:
        return _metadata.version("ray")
    except _metadata.PackageNotFoundError:
        return ""


def _ray_options(args) -> dict:
    """rayVersion and the head's authentication: token mode needs a Ray that has it."""
    version = check_ray_version(args.ray_version, "--ray-version") if args.ray_version else _ray_version()
    token = args.ray_auth == "token"
    if token and ray_version_tuple(version) < MIN_RAY_FOR_AUTH:
        have = f"Ray {version}" if version else "no rayVersion (Ray is not installed here)"
        raise OptionError("--ray-auth", f"token authentication needs Ray >= 2.52.0 in --image, and render has {have}: "
                          "pass --ray-version with the image's Ray, or --ray-auth disabled for an older image")
    if args.ray_auth_secret and not token:
        raise OptionError("--ray-auth-secret", "goes with --ray-auth token")
    if args.operator_namespace:
        check_namespace(args.operator_namespace, "--operator-namespace")
    return {"ray_version": version, "ray_auth": token,
            "ray_auth_secret": check_secret_name(args.ray_auth_secret, "--ray-auth-secret"),
            "network_policy": not args.no_network_policy, "operator_namespace": args.operator_namespace or None}


def _lock_wait(args, pipeline) -> int:
    """``--lock-wait``, else the config's ``output.lock_wait_seconds`` if it sets one, else the
    default; below ``--deadline``, which would end a run still waiting."""
    output = pipeline.config.output
    if args.lock_wait is not None:
        wait = _count(args.lock_wait, "--lock-wait")
    elif "lock_wait_seconds" in output.model_fields_set:
        wait = math.ceil(output.lock_wait_seconds)
    else:
        wait = DEFAULT_LOCK_WAIT
    if wait >= args.deadline:
        raise OptionError("--lock-wait", f"{wait} s is not less than --deadline {args.deadline} s: the run would be "
                          "stopped while it waits")
    return wait


def build_options(args, pipeline, config_text: str) -> RenderOptions:
    """The checked options (``OptionError`` names the first bad one)."""
    name = check_name(args.name, "--name") if args.name else check_name(
        resource_name(pipeline.config.name), "--name (from the config's name)")
    cron = parse_cron(args.schedule, "--schedule")
    check_time_zone(args.time_zone, "--time-zone")
    check_namespace(args.namespace, "--namespace")
    for opt, v in (("--head-cpus", args.head_cpus), ("--head-memory", args.head_memory),
                   ("--worker-cpus", args.worker_cpus), ("--worker-memory", args.worker_memory),
                   ("--gpu-worker-cpus", args.gpu_worker_cpus), ("--gpu-worker-memory", args.gpu_worker_memory)):
        check_quantity(v, opt)
    _count(args.min_cpu_workers, "--min-cpu-workers")
    _count(args.max_cpu_workers, "--max-cpu-workers", 1)
    if args.min_cpu_workers > args.max_cpu_workers:
        raise OptionError("--min-cpu-workers", f"{args.min_cpu_workers} is more than --max-cpu-workers "
                          f"{args.max_cpu_workers}")
    for opt, v, low in (("--deadline", args.deadline, 1), ("--retries", args.retries, 0), ("--ttl", args.ttl, 0),
                        ("--starting-deadline", args.starting_deadline, 10), ("--idle-timeout", args.idle_timeout, 0)):
        _count(v, opt, low)
    need, total = gpu_demand(pipeline)
    per = _count(args.gpus_per_worker, "--gpus-per-worker", 1) if args.gpus_per_worker is not None else max(need, 1)
    max_gpu = _count(args.max_gpu_workers, "--max-gpu-workers") if args.max_gpu_workers is not None \
        else math.ceil(total / per)
    if max_gpu and per < need:
        raise OptionError("--gpus-per-worker", f"{per} is fewer than a replica of this config's GPU stages needs "
                          f"({need}); a replica runs on one worker")
    if need and not max_gpu:
        print("k8s render: warning: the config has GPU stages but --max-gpu-workers is 0: they will wait for "
              "GPUs that never come", file=sys.stderr)
    opts = RenderOptions(
        name=name, config_text=config_text, schedule=args.schedule.strip(), time_zone=args.time_zone,
        cron_mode=args.cron_mode, image=check_image(args.image, "--image"),
        launcher_image=check_image(args.launcher_image, "--launcher-image"), namespace=args.namespace,
        head_cpus=args.head_cpus, head_memory=args.head_memory,
        cpu_group=Group("cpu", args.min_cpu_workers, args.max_cpu_workers, args.worker_cpus, args.worker_memory),
        gpu_group=Group("gpu", 0, max_gpu, args.gpu_worker_cpus, args.gpu_worker_memory, per) if max_gpu else None,
        deadline_s=args.deadline, retries=args.retries, ttl_s=args.ttl, idle_timeout_s=args.idle_timeout,
        starting_deadline_s=args.starting_deadline,
        object_store_secret=check_secret_name(args.object_store_secret, "--object-store-secret"),
        image_pull_secret=check_secret_name(args.image_pull_secret, "--image-pull-secret"),
        read_only_root=not args.writable_root, lock_wait_s=_lock_wait(args, pipeline), **_ray_options(args))
    if opts.cron_mode == "raycronjob":
        gap = cron.min_gap(below=timedelta(seconds=opts.deadline_s))
        if gap is not None:
            print(f"k8s render: warning: runs start as little as {gap} apart but may last --deadline "
                  f"{opts.deadline_s} s; a RayCronJob does not wait for the previous run (cronjob mode does)",
                  file=sys.stderr)
    return opts


def _render(args) -> int:
    from tokenmill.engine.config import ConfigError, load_config

    path = Path(args.config)
    try:
        pipeline = load_config(path, check_inputs=False, check_remote=False)
        config_text, data = _raw_config(path)
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"invalid config {path}\n  (file): {e}", file=sys.stderr)
        return 2
    try:
        opts = build_options(args, pipeline, config_text)
    except OptionError as e:
        print(f"k8s render: {e}", file=sys.stderr)
        return 2
    for key, p in _local_paths(data):
        print(f"k8s render: warning: {key} is a local path ({p}); the pods see only object stores (s3://, gs:// "
              "...) unless a patch mounts a volume there", file=sys.stderr)
    if not args.out:
        sys.stdout.write(stream(opts))
        return 0
    written, notes = write_overlay(opts, Path(args.out), path.name, args.base)
    for p in written:
        print(f"wrote {os.path.normpath(p)}")
    for note in notes:
        print(f"k8s render: note: {os.path.normpath(note)}", file=sys.stderr)
    print(f"apply with: kubectl apply -k {args.out}")
    return 0
