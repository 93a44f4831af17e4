"""What ``tokenmill k8s render`` renders: the options of one schedule, checked before any manifest
is built (``OptionError`` names the option, and the CLI exits 2), and the cron expressions
Kubernetes and KubeRay accept (robfig/cron's standard parser: five fields or a descriptor)."""
from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

#: the KubeRay version whose CRDs the manifests are written (and tested) against
KUBERAY_VERSION = "1.7.0"
#: a name leaves room for what Kubernetes and KubeRay append: RayCronJob <= 36 characters; a
#: CronJob's Job (and so the fallback's RayJob) adds 9 to 11, a RayJob <= 47 (KubeRay's limits)
MAX_NAME = 30
DEFAULT_SCHEDULE = "0 2 * * *"
DEFAULT_TIME_ZONE = "Etc/UTC"
DEFAULT_IMAGE = "tokenmill:0.1.0"
#: any image with kubectl and a POSIX sh will do (Bitnami's versioned tags are gone since 2025)
DEFAULT_LAUNCHER_IMAGE = "alpine/kubectl:1.34.1"
DEFAULT_SECRET = "tokenmill-object-store"
DEFAULT_NAMESPACE = "tokenmill"
#: how long a run waits for another run's lease on the output (tokenmill run --lock-wait), unless
#: the config's output.lock_wait_seconds says otherwise
DEFAULT_LOCK_WAIT = 600
#: the oldest Ray with token authentication; KubeRay refuses ``authOptions.mode: token`` below it
MIN_RAY_FOR_AUTH = (2, 52, 0)
#: the submitter's variable that names the run's lease holder: its RayJob's name, the same for
#: every retry of one RayJob (KubeRay labels the submitter pod with it)
LEASE_HOLDER_ENV = "TOKENMILL_LEASE_HOLDER"
RAYJOB_NAME_LABEL = "ray.io/originated-from-cr-name"

_QUANTITY = re.compile(r"^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class OptionError(ValueError):
    """A bad option value: ``option`` is how the user wrote it (``--schedule``)."""

    def __init__(self, option: str, message: str):
        self.option, self.message = option, message
        super().__init__(f"{option}: {message}")


@dataclass(frozen=True)
class Group:
    """One Ray worker group: autoscaling bounds and what each worker pod gets."""

    name: str
    min_workers: int
    max_workers: int
    cpus: str
    memory: str
    gpus: int = 0


@dataclass(frozen=True)
class RenderOptions:
    name: str                       # DNS-1035 label, <= MAX_NAME: every object's name starts with it
    config_text: str                # the pipeline config the head pod mounts, as the user wrote it
    schedule: str = DEFAULT_SCHEDULE
    time_zone: str = DEFAULT_TIME_ZONE
    cron_mode: str = "cronjob"      # cronjob (batch/v1 + launcher) | raycronjob (KubeRay >= 1.6, gated)
    image: str = DEFAULT_IMAGE
    launcher_image: str = DEFAULT_LAUNCHER_IMAGE
    namespace: str = DEFAULT_NAMESPACE
    ray_version: str = ""
    head_cpus: str = "2"
    head_memory: str = "8Gi"
    cpu_group: Group = Group("cpu", 1, 8, "8", "32Gi")
    gpu_group: Optional[Group] = None
    deadline_s: int = 6 * 3600      # RayJob activeDeadlineSeconds
    retries: int = 1                # RayJob backoffLimit (each retry: a new cluster; finished phases are kept)
    ttl_s: int = 600                # RayJob ttlSecondsAfterFinished (the cluster stays this long for a look)
    idle_timeout_s: int = 300       # the autoscaler removes a worker idle this long
    starting_deadline_s: int = 3600  # CronJob startingDeadlineSeconds
    object_store_secret: Optional[str] = DEFAULT_SECRET
    image_pull_secret: Optional[str] = None
    read_only_root: bool = True
    run_as_user: int = 1000         # the ray user of rayproject/ray images
    run_as_group: int = 100
    ray_auth: bool = True           # authOptions.mode token (KubeRay >= 1.5.1, Ray >= 2.52)
    ray_auth_secret: Optional[str] = None   # a Secret with key auth_token; None: KubeRay makes one per cluster
    network_policy: bool = True     # NetworkPolicies that close the Ray pods to all but their own cluster
    operator_namespace: Optional[str] = None   # where the KubeRay operator runs (None: any namespace)
    lock_wait_s: int = DEFAULT_LOCK_WAIT

    @property
    def config_key(self) -> str:
        return f"{self.name}.yaml"

    @property
    def config_map(self) -> str:
        return f"{self.name}-config"

    @property
    def entrypoint(self) -> str:
        """The run on the head. KubeRay's submitter puts it in ``bash -c``, so the lease holder is
        its pod's ``$TOKENMILL_LEASE_HOLDER`` (the RayJob's name) by the time Ray gets it."""
        return (f"tokenmill run {CONFIG_DIR}/{self.config_key} --address auto --progress log "
                f'--lock-wait {self.lock_wait_s} --lease-holder "${LEASE_HOLDER_ENV}"')


#: where the head pod mounts the config ConfigMap
CONFIG_DIR = "/etc/tokenmill"


def resource_name(raw: str) -> str:
    """A DNS-1035 label from a config's ``name`` (lowercase; other characters become '-')."""
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if name and not name[0].isalpha():
        name = "tm-" + name
    return name


def check_name(name: str, option: str = "--name") -> str:
    if not _DNS1035.match(name or ""):
        raise OptionError(option, f"{name!r} is not a DNS-1035 label (lowercase letters, digits and '-', starting "
                          "with a letter, ending with a letter or digit)")
    if len(name) > MAX_NAME:
        raise OptionError(option, f"{name!r} has {len(name)} characters; at most {MAX_NAME} (KubeRay names RayJobs "
                          "and clusters after it and caps their length)")
    return name


def check_namespace(value: str, option: str = "--namespace") -> str:
    if not value or len(value) > 63 or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", value):
        raise OptionError(option, f"{value!r} is not a namespace name (a DNS-1123 label)")
    return value


def check_quantity(value: str, option: str) -> str:
    if not _QUANTITY.match(str(value)) or float(re.sub(r"[a-zA-Z]+$", "", str(value)) or 0) <= 0:
        raise OptionError(option, f"{value!r} is not a positive Kubernetes quantity (e.g. 8, 500m, 32Gi)")
    return str(value)


def check_image(value: str, option: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise OptionError(option, f"{value!r} is not an image reference")
    return value


def check_secret_name(value: Optional[str], option: str) -> Optional[str]:
    if value and not _DNS1123_SUBDOMAIN.match(value):
        raise OptionError(option, f"{value!r} is not a Kubernetes object name")
    return value or None


def check_ray_version(value: str, option: str = "--ray-version") -> str:
    if value and not re.fullmatch(r"\d+\.\d+(\.\d+)?([-.+]?[0-9A-Za-z.]+)?", value):
        raise OptionError(option, f"{value!r} is not a Ray version (e.g. 2.60.0)")
    return value


def ray_version_tuple(value: str) -> tuple[int, ...]:
    """(2, 60, 0) from '2.60.0' or '2.60' (a suffix such as rc1 is ignored); () for ''."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", value or "")
    return tuple(int(p or 0) for p in m.groups()) if m else ()


def check_time_zone(tz: str, option: str = "--time-zone") -> str:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise OptionError(option, f"unknown time zone {tz!r} (an IANA name such as Etc/UTC or Europe/Berlin)") from None
    return tz


# --- cron expressions (robfig/cron v3 ParseStandard, as Kubernetes and KubeRay parse them) ---

_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
#: (field name, low, high, names)
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 6, _DAYS))


@dataclass(frozen=True)
class Cron:
    minutes: frozenset
    hours: frozenset
    days: frozenset
    months: frozenset
    weekdays: frozenset
    days_star: bool       # '*' or '?' in day of month: days are chosen by day of week alone
    weekdays_star: bool

    def fires_on(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom, dow = day.day in self.days, (day.weekday() + 1) % 7 in self.weekdays
        return dom and dow if (self.days_star or self.weekdays_star) else dom or dow

    def min_gap(self, below: timedelta, years: int = 4) -> Optional[timedelta]:
        """The shortest time between two firings over ``years`` (from 2025, wall clock), or None
        when it is at least ``below`` (the search stops at the first gap shorter than that)."""
        times = sorted(h * 60 + m for h in self.hours for m in self.minutes)
        prev, best = None, None
        start = datetime(2025, 1, 1)
        for d in range(366 * years + 1):
            day = start + timedelta(days=d)
            if not self.fires_on(day):
                continue
            for t in times:
                at = day + timedelta(minutes=t)
                if prev is not None:
                    gap = at - prev
                    if best is None or gap < best:
                        best = gap
                        if best < below:
                            return best
                prev = at
        return None


def _parse_value(text: str, names: dict, what: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{what}: {text!r} is not a number" + (f" or a name ({', '.join(k.upper() for k in names)})"
                                                                 if names else ""))
    return int(text)


def _parse_field(text: str, what: str, low: int, high: int, names: dict) -> tuple[frozenset, bool]:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        range_text, slash, step_text = part.partition("/")
        if "/" in step_text or (slash and not step_text):
            raise ValueError(f"{what}: bad step in {part!r}")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{what}: the step in {part!r} must be a positive number")
            step = int(step_text)
        if range_text in ("*", "?"):
            start, end = low, high
            star = star or step == 1
        else:
            first, dash, last = range_text.partition("-")
            start = _parse_value(first, names, what)
            end = _parse_value(last, names, what) if dash else (high if step_text else start)
        if not (low <= start <= high and low <= end <= high):
            raise ValueError(f"{what}: {part!r} is outside {low}-{high}")
        if start > end:
            raise ValueError(f"{what}: {part!r} starts after it ends")
        values.update(range(start, end + 1, step))
    return frozenset(values), star


def parse_cron(expr: str, option: str = "--schedule") -> Cron:
    """Parse a schedule the way Kubernetes' CronJob and KubeRay's RayCronJob do (five fields:
    minute hour day-of-month month day-of-week, or @daily and friends); ``OptionError`` otherwise."""
    text = (expr or "").strip()
    if "TZ" in text:
        raise OptionError(option, "no TZ= or CRON_TZ= in the schedule: use --time-zone")
    if text.startswith("@"):
        if text.lower() not in _DESCRIPTORS:
            raise OptionError(option, f"{expr!r}: unknown descriptor; expected five fields or one of "
                              f"{', '.join(_DESCRIPTORS)}")
        text = _DESCRIPTORS[text.lower()]
    fields = text.split()
    if len(fields) != 5:
        raise OptionError(option, f"{expr!r}: expected 5 fields (minute hour day-of-month month day-of-week), "
                          f"got {len(fields)}")
    try:
        parsed = [_parse_field(f, what, low, high, names) for f, (what, low, high, names) in zip(fields, _FIELDS)]
    except ValueError as e:
        raise OptionError(option, f"{expr!r}: {e}") from None
    (minutes, _), (hours, _), (days, days_star), (months, _), (weekdays, weekdays_star) = parsed
    return Cron(minutes, hours, days, months, weekdays, days_star, weekdays_star)
