"""Kubernetes manifests: everything in k8s/ (built with ``kubectl kustomize``) and everything
``tokenmill k8s render`` writes validates strictly against KubeRay v1.7.0's CRDs and the core
Kubernetes schemas, passes the pod security check and the isolation check (a Ray token, and
NetworkPolicies that admit only the cluster's own pods), every attempt of one run shares a lease
holder, and k8s/overlays is what render writes."""
from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from k8s_schemas import (
    CRD_DIR,
    Pod,
    crd_errors,
    embedded_objects,
    errors,
    ingress_allowed,
    isolation_problems,
    kuberay_pods,
    kustomize,
    pod_templates,
    security_problems,
)

from tokenmill.cluster.k8s_options import OptionError, parse_cron
from tokenmill.engine.cli import main

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
#: how k8s/overlays/<lang> was written (and is written again by test_render_reproduces_the_overlays)
OVERLAYS = {
    "en": ["configs/k8s/en.yaml", "--cron-mode", "raycronjob", "--schedule", "0 1 * * *"],
    "de": ["configs/k8s/de.yaml", "--cron-mode", "cronjob", "--schedule", "30 1 * * *", "--time-zone",
           "Europe/Berlin"],
}
CONFIGS = [REPO / "configs" / "k8s" / "en.yaml", REPO / "configs" / "k8s" / "de.yaml"]
#: render writes the installed Ray's version as rayVersion; the tests render the overlays' (CI also
#: runs them on the lowest Ray the package allows, older than token authentication)
OVERLAY_RAY = re.search(r"rayVersion: '?([0-9.]+)", (K8S / "overlays" / "en" / "raycronjob.yaml").read_text()).group(1)


@pytest.fixture(autouse=True)
def _no_object_store(monkeypatch):
    """Render needs no credentials and reads nothing from the object store."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def _ray_version(monkeypatch):
    from tokenmill.cluster import k8s_cli

    monkeypatch.setattr(k8s_cli, "_ray_version", lambda: OVERLAY_RAY)


def render(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["k8s", "render", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def render_objects(capsys, *args: str) -> list[dict]:
    code, out, err = render(capsys, *args)
    assert code == 0, err
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(objs: list[dict], kind: str) -> dict:
    return next(o for o in objs if o["kind"] == kind)


def assert_valid(objs: list[dict]) -> None:
    problems = {f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}": errors(o) for o in objs}
    assert not {k: v for k, v in problems.items() if v}, problems


def test_shared_crds_are_there():
    assert CRD_DIR.is_dir(), f"KubeRay CRDs not found at {CRD_DIR} (../shared/k8s)"


@pytest.mark.parametrize("folder", ["base", "overlays/en", "overlays/de"])
def test_repo_manifests_validate_strictly(folder):
    objs = kustomize(K8S / folder)
    assert objs
    assert_valid(objs)
    assert not security_problems(objs)
    assert not isolation_problems(objs)


def test_repo_overlays_hold_both_cron_modes():
    en = {o["kind"] for o in kustomize(K8S / "overlays" / "en")}
    de = {o["kind"] for o in kustomize(K8S / "overlays" / "de")}
    assert en == {"ConfigMap", "NetworkPolicy", "RayCronJob"}
    assert de == {"ConfigMap", "NetworkPolicy", "CronJob", "ServiceAccount", "Role", "RoleBinding"}


@pytest.mark.parametrize("mode", ["raycronjob", "cronjob"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_render_output_validates_and_is_secure(capsys, tmp_path, config, mode):
    objs = render_objects(capsys, str(config), "--cron-mode", mode)
    kinds = [o["kind"] for o in objs]
    assert ("RayCronJob" in kinds) == (mode == "raycronjob") and ("CronJob" in kinds) == (mode == "cronjob")
    assert all(o["metadata"].get("namespace") == "tokenmill" for o in objs)
    assert_valid(objs)
    assert not security_problems(objs)
    assert not isolation_problems(objs)
    # the same manifests as a kustomize overlay over the base
    code, _, err = render(capsys, str(config), "--cron-mode", mode, "--out", str(tmp_path / "overlays" / "x"))
    assert code == 0, err
    built = kustomize(tmp_path / "overlays" / "x")
    assert_valid(built)
    assert not security_problems(built)
    assert not isolation_problems(built)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in built) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in objs)


def test_render_reproduces_the_overlays(capsys, tmp_path, monkeypatch):
    """Byte for byte (``rayVersion`` as the overlays say: OVERLAY_RAY)."""
    monkeypatch.chdir(REPO)
    for lang, args in OVERLAYS.items():
        code, _, err = render(capsys, *args, "--out", str(tmp_path / "overlays" / lang))
        assert code == 0, err
    for folder in ("base", "overlays/en", "overlays/de"):
        want = sorted(p.name for p in (K8S / folder).iterdir())
        got = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert got == want, folder
        lang = folder.rpartition("/")[2]
        again = " && ".join(f"tokenmill k8s render {shlex.join(OVERLAYS[k])} --out k8s/overlays/{k}" for k in OVERLAYS
                            if k == lang or lang == "base")
        if lang == "base":
            again = "rm -r k8s/base && " + again
        for name in want:
            assert (tmp_path / folder / name).read_bytes() == (K8S / folder / name).read_bytes(), \
                f"k8s/{folder}/{name} is not what render writes now: run `{again}`"


def test_the_config_travels_unchanged_and_mounts_on_the_head(capsys):
    config = CONFIGS[0]
    objs = render_objects(capsys, str(config), "--cron-mode", "raycronjob")
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    assert cm["data"] == {"tokenmill-en.yaml": config.read_text()}
    job = next(o for o in objs if o["kind"] == "RayCronJob")["spec"]["jobTemplate"]
    assert job["entrypoint"] == ("tokenmill run /etc/tokenmill/tokenmill-en.yaml --address auto --progress log "
                                 '--lock-wait 600 --lease-holder "$TOKENMILL_LEASE_HOLDER"')
    head = job["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    spec = head["template"]["spec"]
    assert {"name": "config", "configMap": {"name": "tokenmill-en-config"}} in spec["volumes"]
    assert {"name": "config", "mountPath": "/etc/tokenmill", "readOnly": True} in spec["containers"][0]["volumeMounts"]
    for key in ("shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"):
        assert key in job
    assert job["shutdownAfterJobFinishes"] is True


def test_worker_groups_follow_the_config_and_options(capsys):
    en = of_kind(render_objects(capsys, str(CONFIGS[0]), "--cron-mode", "raycronjob"), "RayCronJob")["spec"][
        "jobTemplate"]
    groups = {g["groupName"]: g for g in en["rayClusterSpec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}            # en rephrases with vLLM: a GPU group from zero
    assert en["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    assert groups["gpu"]["minReplicas"] == 0 and groups["gpu"]["maxReplicas"] == 4
    res = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == 1
    assert (groups["cpu"]["minReplicas"], groups["cpu"]["maxReplicas"]) == (1, 8)

    de = render_objects(capsys, str(CONFIGS[1]), "--cron-mode", "raycronjob", "--min-cpu-workers", "2",
                        "--max-cpu-workers", "30", "--worker-cpus", "16", "--worker-memory", "64Gi")
    spec = of_kind(de, "RayCronJob")["spec"]["jobTemplate"]["rayClusterSpec"]
    assert [g["groupName"] for g in spec["workerGroupSpecs"]] == ["cpu"]    # CPU stages only: no GPU group
    cpu = spec["workerGroupSpecs"][0]
    assert (cpu["minReplicas"], cpu["maxReplicas"]) == (2, 30)
    assert cpu["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "16", "memory": "64Gi"}
    de = render_objects(capsys, str(CONFIGS[1]), "--cron-mode", "raycronjob", "--max-gpu-workers", "2",
                        "--gpus-per-worker", "8")
    gpu = of_kind(de, "RayCronJob")["spec"]["jobTemplate"]["rayClusterSpec"]["workerGroupSpecs"][1]
    assert gpu["maxReplicas"] == 2
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8


def test_cronjob_fallback_rbac_and_history(capsys):
    objs = render_objects(capsys, str(CONFIGS[1]), "--cron-mode", "cronjob", "--namespace", "curation")
    by_kind = {o["kind"]: o for o in objs}
    role = by_kind["Role"]
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get"]}]
    assert by_kind["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "tokenmill-launcher", "namespace": "curation"}]
    cron = by_kind["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid" and cron["timeZone"] == "Etc/UTC"
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        assert isinstance(cron[key], int)
    job = cron["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > 21600
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "tokenmill-launcher" and pod["restartPolicy"] == "Never"
    # the launcher creates the RayJob carried in a ConfigMap: a valid RayJob with generateName
    rayjob = next(e for o in objs for e in embedded_objects(o))
    assert rayjob["kind"] == "RayJob" and rayjob["metadata"]["generateName"] == "tokenmill-de-"
    assert "namespace" not in rayjob["metadata"]
    assert not errors(rayjob)
    script = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "tokenmill-launcher")
    assert "kubectl create" in script["data"]["launch.sh"]


def test_every_pod_template_is_checked(capsys):
    """The security check sees the head, both worker groups, the submitter and the launcher."""
    objs = render_objects(capsys, str(CONFIGS[0]), "--cron-mode", "cronjob")
    seen = [w for o in objs for w, _ in pod_templates(o)]
    seen += [w for o in objs for inner in embedded_objects(o) for w, _ in pod_templates(inner)]
    joined = "\n".join(seen)
    for part in ("headGroupSpec", "workerGroupSpecs[0]", "workerGroupSpecs[1]", "submitterPodTemplate",
                 "CronJob/tokenmill-en"):
        assert part in joined, joined


def test_planted_errors_are_caught(capsys):
    objs = render_objects(capsys, str(CONFIGS[0]), "--cron-mode", "raycronjob")
    cron = next(o for o in objs if o["kind"] == "RayCronJob")
    assert not errors(cron)
    # a misspelled field: the CRD as shipped would let it through (the API server prunes it)
    typo = copy.deepcopy(cron)
    typo["spec"]["jobTemplate"]["shutdownAfterJobFinish"] = True
    assert not crd_errors(typo, strict=False)
    assert any("shutdownAfterJobFinish" in e for e in errors(typo))
    typo = copy.deepcopy(cron)
    typo["spec"]["jobTemplate"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "volumeMount"] = []
    assert any("volumeMount" in e for e in errors(typo))
    # a wrong type
    wrong = copy.deepcopy(cron)
    wrong["spec"]["jobTemplate"]["activeDeadlineSeconds"] = "21600"
    assert any("activeDeadlineSeconds" in e and "integer" in e for e in errors(wrong))
    wrong = copy.deepcopy(cron)
    wrong["spec"]["jobTemplate"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = "8"
    assert any("maxReplicas" in e for e in errors(wrong))
    # metadata, which the CRD leaves open, is checked against the core schema
    wrong = copy.deepcopy(cron)
    wrong["metadata"]["lables"] = {"a": "b"}
    assert any("lables" in e for e in errors(wrong))
    # a name KubeRay would refuse
    wrong = copy.deepcopy(cron)
    wrong["metadata"]["name"] = "x" * 40
    assert any("36" in e for e in errors(wrong))

    objs = render_objects(capsys, str(CONFIGS[1]), "--cron-mode", "cronjob")
    cronjob = next(o for o in objs if o["kind"] == "CronJob")
    assert not errors(cronjob)
    typo = copy.deepcopy(cronjob)
    typo["spec"]["concurrencyPolcy"] = "Forbid"
    assert any("concurrencyPolcy" in e for e in errors(typo))
    wrong = copy.deepcopy(cronjob)
    wrong["spec"]["successfulJobsHistoryLimit"] = "3"
    assert any("successfulJobsHistoryLimit" in e for e in errors(wrong))
    role = next(o for o in objs if o["kind"] == "Role")
    wrong = copy.deepcopy(role)
    wrong["rules"][0]["verbs"] = "create"
    assert any("verbs" in e for e in errors(wrong))
    # and inside the RayJob manifest the launcher carries
    carrier = next(o for o in objs if embedded_objects(o))
    wrong = copy.deepcopy(carrier)
    wrong["data"]["rayjob.yaml"] = wrong["data"]["rayjob.yaml"].replace("backoffLimit: 1", "backoffLimit: one")
    assert any("backoffLimit" in e for e in errors(wrong))


def test_security_check_catches_what_it_should(capsys):
    objs = render_objects(capsys, str(CONFIGS[0]), "--cron-mode", "cronjob")
    assert not security_problems(objs)
    cron = next(o for o in objs if o["kind"] == "CronJob")

    def planted(change) -> list[str]:
        bad = copy.deepcopy(cron)
        change(bad["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        return security_problems([bad])

    assert planted(lambda s: s["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True))
    assert planted(lambda s: s["containers"][0]["securityContext"].update(capabilities={"drop": ["NET_RAW"]}))
    assert planted(lambda s: s["containers"][0]["securityContext"].update(runAsUser=0))
    assert planted(lambda s: s["containers"][0]["securityContext"].update(runAsNonRoot=False))
    assert planted(lambda s: s["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False))
    assert planted(lambda s: s["containers"][0]["resources"].pop("limits"))
    assert planted(lambda s: s["containers"][0]["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"}))
    assert planted(lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}))
    ray = next(o for o in objs if embedded_objects(o))
    leaky = copy.deepcopy(ray)
    leaky["data"]["rayjob.yaml"] = leaky["data"]["rayjob.yaml"].replace("allowPrivilegeEscalation: false",
                                                                        "allowPrivilegeEscalation: true", 1)
    assert any("(embedded)" in p for p in security_problems([leaky]))
    config = next(o for o in objs if o["metadata"]["name"] == "tokenmill-en-config")
    leaky = copy.deepcopy(config)
    leaky["data"]["tokenmill-en.yaml"] += "# aws_secret_access_key: abc123\n"
    assert security_problems([leaky])
    assert security_problems([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                               "stringData": {"k": "v"}}])


def test_credentials_only_by_secret_reference(capsys):
    objs = render_objects(capsys, str(CONFIGS[0]), "--cron-mode", "raycronjob", "--object-store-secret", "s3-creds")
    spec = of_kind(objs, "RayCronJob")["spec"]["jobTemplate"]
    for group in [spec["rayClusterSpec"]["headGroupSpec"], *spec["rayClusterSpec"]["workerGroupSpecs"]]:
        c = group["template"]["spec"]["containers"][0]
        assert c["envFrom"] == [{"secretRef": {"name": "s3-creds", "optional": True}}]
    assert "envFrom" not in spec["submitterPodTemplate"]["spec"]["containers"][0]
    objs = render_objects(capsys, str(CONFIGS[0]), "--cron-mode", "raycronjob", "--object-store-secret", "")
    assert "envFrom" not in yaml.safe_dump(objs)


def test_cli_errors_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ninput: {paths: [s3://b/in/]}\noutput: {path: s3://b/out}\n"
                   "stages: [{type: langid, keep_languages: en}]\n")
    code, out, err = render(capsys, str(bad))
    assert code == 2 and not out
    assert "stages[0].keep_languages" in err
    code, _, err = render(capsys, str(tmp_path / "missing.yaml"))
    assert code == 2 and "not found" in err
    for args, option in ((["--schedule", "0 2 * *"], "--schedule"), (["--schedule", "61 2 * * *"], "--schedule"),
                         (["--schedule", "@every 1h"], "--schedule"), (["--time-zone", "Mars/Olympus"], "--time-zone"),
                         (["--worker-memory", "lots"], "--worker-memory"), (["--name", "Tokenmill_EN"], "--name"),
                         (["--name", "a" * 31], "--name"), (["--min-cpu-workers", "9"], "--min-cpu-workers"),
                         (["--gpus-per-worker", "0"], "--gpus-per-worker"), (["--namespace", "Bad NS"], "--namespace")):
        code, out, err = render(capsys, str(CONFIGS[0]), *args)
        assert code == 2 and not out, (args, err)
        assert err.startswith(f"k8s render: {option}"), (args, err)


def test_extends_travels_merged_and_local_paths_warn(capsys, tmp_path):
    (tmp_path / "base.yaml").write_text("input: {paths: [s3://b/in/]}\noutput: {path: s3://b/out}\n"
                                        "stages: [{type: langid}, {type: exact_dedup}]\n")
    (tmp_path / "fr.yaml").write_text("extends: base.yaml\nname: web-fr\noutput: {path: out/fr}\n")
    code, out, err = render(capsys, str(tmp_path / "fr.yaml"), "--cron-mode", "raycronjob")
    assert code == 0, err
    objs = [d for d in yaml.safe_load_all(out) if d]
    assert of_kind(objs, "RayCronJob")["metadata"]["name"] == "web-fr"
    mounted = yaml.safe_load(objs[0]["data"]["web-fr.yaml"])
    assert "extends" not in mounted and mounted["stages"] == [{"type": "langid"}, {"type": "exact_dedup"}]
    assert mounted["output"]["path"] == "out/fr"
    assert "output.path is a local path" in err


def test_cron_expressions():
    for ok in ("0 2 * * *", "*/15 * * * *", "30 1 * * MON-FRI", "0 0 1,15 * *", "0 3 * JAN-MAR sun", "@daily",
               "0 0 ? * 0", "5/10 * * * *"):
        parse_cron(ok)
    for bad in ("", "0 2 * *", "0 2 * * * *", "60 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *", "0 0 * * 7",
                "*/0 * * * *", "5-1 * * * *", "0 0 L * *", "TZ=UTC 0 2 * * *", "@every 1h", "a b c d e"):
        with pytest.raises(OptionError):
            parse_cron(bad)
    from datetime import timedelta

    daily = parse_cron("30 1 * * *")
    assert daily.min_gap(below=timedelta(hours=6)) is None
    assert parse_cron("0 */4 * * *").min_gap(below=timedelta(hours=6)) == timedelta(hours=4)
    assert parse_cron("0 0 1,15 * *").min_gap(below=timedelta(days=30)) == timedelta(days=14)


def test_raycronjob_warns_when_runs_could_overlap(capsys):
    code, _, err = render(capsys, str(CONFIGS[1]), "--cron-mode", "raycronjob", "--schedule", "0 */4 * * *")
    assert code == 0 and "does not wait for the previous run" in err
    code, _, err = render(capsys, str(CONFIGS[1]), "--cron-mode", "cronjob", "--schedule", "0 */4 * * *")
    assert code == 0 and "previous run" not in err


def test_model_checks_skip_only_object_stores(capsys, tmp_path):
    """Render does not fetch a model from an object store, but a missing local model still fails the
    config, and the stages' own checks are back in place afterwards."""
    from tokenmill.engine.config import ConfigError, load_config

    local = tmp_path / "local.yaml"
    local.write_text("name: x\ninput: {paths: [s3://b/in/]}\noutput: {path: s3://b/out}\n"
                     f"stages: [{{type: quality_fasttext, model_path: {tmp_path / 'no-model'}, threshold: 0.5}}]\n")
    code, _, err = render(capsys, str(local))
    assert code == 2 and "stages[0].model_path" in err
    code, _, err = render(capsys, str(CONFIGS[0]))        # its quality model is on s3://
    assert code == 0, err
    with pytest.raises(ConfigError, match="model_path"):
        load_config(local, check_inputs=False)


def test_writable_root_is_only_for_the_ray_containers(capsys):
    objs = render_objects(capsys, str(CONFIGS[0]), "--cron-mode", "raycronjob", "--writable-root")
    problems = security_problems(objs)
    assert problems and all("root filesystem not read-only" in p for p in problems)
    assert {p.split(" container ")[-1].split(":")[0] for p in problems} == {"ray-head", "ray-worker"}


# --- access to the Ray clusters: a token and NetworkPolicies ---

def _ray_object(objs: list[dict]) -> dict:
    """The RayCronJob, or the RayJob the CronJob's launcher creates."""
    found = [o for o in objs if o["kind"] == "RayCronJob"] + [e for o in objs for e in embedded_objects(o)]
    return found[0]


def _cluster(obj: dict) -> dict:
    return (obj["spec"]["jobTemplate"] if obj["kind"] == "RayCronJob" else obj["spec"])["rayClusterSpec"]


@pytest.mark.parametrize("mode", ["raycronjob", "cronjob"])
def test_the_head_authenticates_with_a_token(capsys, mode):
    objs = render_objects(capsys, str(CONFIGS[0]), "--cron-mode", mode)
    ray = _ray_object(objs)
    assert _cluster(ray)["authOptions"] == {"mode": "token"} and _cluster(ray)["rayVersion"] == OVERLAY_RAY
    assert not errors(ray)
    assert "RAY_AUTH_TOKEN" not in yaml.safe_dump(objs)      # KubeRay adds it, from its own Secret
    mine = _ray_object(render_objects(capsys, str(CONFIGS[0]), "--cron-mode", mode, "--ray-auth-secret", "ray-token"))
    assert _cluster(mine)["authOptions"] == {"mode": "token", "secretName": "ray-token"}
    assert not errors(mine)


def test_kuberay_refusals_about_authentication_are_caught(capsys):
    ray = _ray_object(render_objects(capsys, str(CONFIGS[0]), "--cron-mode", "raycronjob"))

    def planted(change) -> list[str]:
        bad = copy.deepcopy(ray)
        change(_cluster(bad))
        return errors(bad)

    assert any("authOptions.mode" in e for e in planted(lambda c: c["authOptions"].update(mode="tokens")))
    assert any("secretNam" in e for e in planted(lambda c: c["authOptions"].update(secretNam="x")))
    assert any("2.52.0" in e for e in planted(lambda c: c.update(rayVersion="2.50.0")))
    assert any("needs rayVersion" in e for e in planted(lambda c: c.pop("rayVersion")))
    assert any("enableK8sTokenAuth" in e for e in planted(lambda c: c["authOptions"].update(enableK8sTokenAuth=True)))


def test_token_authentication_needs_a_recent_ray(capsys, monkeypatch):
    from tokenmill.cluster import k8s_cli

    for installed in ("2.50.0", ""):
        monkeypatch.setattr(k8s_cli, "_ray_version", lambda v=installed: v)
        code, out, err = render(capsys, str(CONFIGS[0]))
        assert code == 2 and not out and err.startswith("k8s render: --ray-auth: token authentication needs Ray >= "
                                                        "2.52.0"), err
        assert "--ray-version" in err and "--ray-auth disabled" in err
    objs = render_objects(capsys, str(CONFIGS[0]), "--ray-version", "2.55.1")
    assert _cluster(_ray_object(objs))["rayVersion"] == "2.55.1" and not errors(_ray_object(objs))
    old = render_objects(capsys, str(CONFIGS[0]), "--ray-auth", "disabled")
    assert _cluster(_ray_object(old))["authOptions"] == {"mode": "disabled"} and not errors(_ray_object(old))
    assert any("does not authenticate" in p for p in isolation_problems(old))
    for args, option in ((["--ray-auth", "disabled", "--ray-auth-secret", "x"], "--ray-auth-secret"),
                         (["--ray-version", "two"], "--ray-version"), (["--ray-auth-secret", "Bad_Name"], "--ray-auth-secret"),
                         (["--operator-namespace", "Bad NS"], "--operator-namespace")):
        code, out, err = render(capsys, str(CONFIGS[0]), "--ray-version", "2.60.0", *args)
        assert code == 2 and not out and err.startswith(f"k8s render: {option}"), (args, err)


@pytest.mark.parametrize("mode", ["raycronjob", "cronjob"])
def test_network_policies_admit_only_the_cluster_its_submitter_and_the_operator(capsys, mode):
    objs = render_objects(capsys, str(CONFIGS[0]), "--cron-mode", mode)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    assert sorted(p["metadata"]["name"] for p in policies) == ["tokenmill-en-ray-head", "tokenmill-en-ray-workers"]
    pods = kuberay_pods(_ray_object(objs), "tokenmill")
    head, cpu, gpu, submitter = pods["head"], pods["worker-cpu"], pods["worker-gpu"], pods["submitter"]
    operator = Pod("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "k"})
    stranger = Pod("tokenmill", {"app": "debug"})
    others = kuberay_pods(_ray_object(render_objects(capsys, str(CONFIGS[1]), "--cron-mode", mode)), "tokenmill")
    launcher = Pod("tokenmill", {**cpu.labels, "app.kubernetes.io/component": "launcher"})
    del launcher.labels["ray.io/is-ray-node"]
    allowed = lambda src, dst, port: ingress_allowed(policies, src, dst, port)
    for port in (6379, 8265, 10001, 52365, 12000):          # the cluster's own pods: every port, every way
        assert all(allowed(s, head, port) for s in (cpu, gpu))
        assert all(allowed(s, d, port) for s in (head, cpu, gpu) for d in (cpu, gpu))
    assert allowed(submitter, head, 8265) and allowed(operator, head, 8265)     # the Jobs API, nothing else
    for port in (6379, 10001, 52365, 12000):
        assert not allowed(submitter, head, port) and not allowed(operator, head, port)
    for src in (stranger, others["head"], others["worker-cpu"], others["submitter"], launcher, Pod("x", {})):
        assert not any(allowed(src, dst, port) for dst in (head, cpu, gpu) for port in (6379, 8265, 10001, 12000))
    assert not any(allowed(submitter, w, 8265) or allowed(operator, w, 8265) for w in (cpu, gpu))
    assert not isolation_problems(objs)
    # the check finds a hole
    assert any("worker-cpu" in p for p in isolation_problems([o for o in objs if not o["metadata"]["name"].endswith(
        "-ray-workers")]))

    narrow = render_objects(capsys, str(CONFIGS[0]), "--cron-mode", mode, "--operator-namespace", "ray-system")
    policies = [o for o in narrow if o["kind"] == "NetworkPolicy"]
    assert not ingress_allowed(policies, operator, head, 8265)
    assert ingress_allowed(policies, Pod("ray-system", operator.labels), head, 8265)
    assert not ingress_allowed(policies, Pod("ray-system", {"app": "x"}), head, 8265)
    bare = render_objects(capsys, str(CONFIGS[0]), "--cron-mode", mode, "--no-network-policy")
    assert "NetworkPolicy" not in {o["kind"] for o in bare}
    assert any("reachable from pods outside" in p for p in isolation_problems(bare))


# --- leases: every attempt of one run has the same holder ---

def _as_run_on_the_head(entrypoint: str, holder: str) -> list[str]:
    """The arguments ``tokenmill run`` gets. KubeRay's submitter runs ``ray job submit ... --
    ENTRYPOINT ;`` in ``bash -ce`` with its pod's environment (common/job.go), ``ray job submit``
    joins what bash made of it with ``subprocess.list2cmdline``, and Ray runs that in a shell."""
    import sys

    probe = f"{shlex.quote(sys.executable)} -c 'import subprocess, sys; print(subprocess.list2cmdline(sys.argv[1:]))'"
    done = subprocess.run(["/bin/bash", "-ce", "--", f"{probe} {entrypoint} ;"], capture_output=True, text=True,
                          env={"TOKENMILL_LEASE_HOLDER": holder, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout)


@pytest.mark.parametrize("mode", ["raycronjob", "cronjob"])
def test_every_attempt_of_a_run_passes_one_lease_holder(capsys, mode):
    """The holder is the RayJob's name: the same for every retry (backoffLimit: a new cluster and
    submitter, the same RayJob) and for a retried launcher pod (it follows the RayJob it made), and
    new for every scheduled run (each tick makes a RayJob of its own name)."""
    from tokenmill.cluster.k8s_options import RAYJOB_NAME_LABEL
    from tokenmill.engine.cli import _parser

    ray = _ray_object(render_objects(capsys, str(CONFIGS[0]), "--cron-mode", mode))
    job = ray["spec"]["jobTemplate"] if mode == "raycronjob" else ray["spec"]
    submitter = job["submitterPodTemplate"]["spec"]["containers"][0]
    assert {"name": "TOKENMILL_LEASE_HOLDER", "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.labels['{RAYJOB_NAME_LABEL}']"}}} in submitter["env"]
    assert RAYJOB_NAME_LABEL == "ray.io/originated-from-cr-name"   # KubeRay sets it to the RayJob's name
    argv = _as_run_on_the_head(job["entrypoint"], "tokenmill-en-29467260")
    assert argv[:2] == ["tokenmill", "run"]
    args = _parser().parse_args(argv[1:])
    assert (args.config, args.address, args.progress) == ("/etc/tokenmill/tokenmill-en.yaml", "auto", "log")
    assert args.lease_holder == "tokenmill-en-29467260" and args.lock_wait == 600


def test_lock_wait_follows_the_option_or_the_config(capsys, tmp_path):
    def lock_wait(*args: str, config=CONFIGS[1]) -> str:
        ray = _ray_object(render_objects(capsys, str(config), "--cron-mode", "raycronjob", *args))
        return re.search(r"--lock-wait (\S+)", ray["spec"]["jobTemplate"]["entrypoint"]).group(1)

    assert lock_wait() == "600"
    assert lock_wait("--lock-wait", "0") == "0" and lock_wait("--lock-wait", "1800") == "1800"
    patient = tmp_path / "patient.yaml"
    patient.write_text("name: patient\ninput: {paths: [s3://b/in/]}\n"
                       "output: {path: s3://b/out, incremental: true, lock_wait_seconds: 1200.5}\n"
                       "stages: [{type: langid}]\n")
    assert lock_wait(config=patient) == "1201" and lock_wait("--lock-wait", "60", config=patient) == "60"
    patient.write_text(patient.read_text().replace("1200.5", "0"))      # said so: exit 75 at once
    assert lock_wait(config=patient) == "0"
    for args in (["--lock-wait", "-1"], ["--lock-wait", "21600"], ["--deadline", "600"]):
        code, out, err = render(capsys, str(CONFIGS[1]), *args)
        assert code == 2 and not out and err.startswith("k8s render: --lock-wait"), (args, err)
