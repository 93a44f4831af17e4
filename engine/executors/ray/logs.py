"""Ray's own output kept out of tokenmill's console: Ray Data's logging config, the raylet's
pushed warnings, and where the session's logs are. These reach into Ray's internals (there is no
public API for them), so they live here alone and fail soft: a Ray without one of them just
prints more."""
from __future__ import annotations

import logging
import os
from typing import Optional


def session_logs() -> Optional[str]:
    """The log folder of the Ray session this driver is connected to, when it is on this machine."""
    try:
        from ray._private.worker import _global_node

        path = _global_node.get_logs_dir_path() if _global_node is not None else None
    except Exception:  # a Ray client connection has no local node
        return None
    return path if path and os.path.isdir(path) else None


def ray_data_console(level: int) -> None:
    """Ray Data logs INFO (progress blocks, execution stats) and warnings to the console, and
    re-reads its logging config at each execution: point it (``RAY_DATA_LOGGING_CONFIG``) at a copy
    of its default config whose console handler passes only ``level`` and up. Its log file in the
    session folder keeps everything."""
    import copy
    import tempfile

    import yaml

    try:
        from ray.data._internal.logging import DEFAULT_CONFIG, configure_logging
    except ImportError:  # a Ray Data without this config: leave its logging as it is
        return
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["handlers"]["console"]["level"] = logging.getLevelName(level)
    path = os.path.join(tempfile.gettempdir(), f"tokenmill-ray-data-logging-{os.getpid()}.yaml")
    with open(f"{path}.tmp", "w") as fh:
        yaml.safe_dump(config, fh)
    os.replace(f"{path}.tmp", path)
    os.environ["RAY_DATA_LOGGING_CONFIG"] = path
    configure_logging()


RAYLET_NOISE = ("worker processes have been started",)


def quiet_raylet_warnings() -> None:
    """The raylet pushes some warnings straight to the driver's stdout whatever ``log_to_driver``
    says (e.g. "N PYTHON worker processes have been started ...", harmless with task pools); drop
    those (they are in the session's raylet.out) and print every other pushed message."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return
    original = ray_worker.print_to_stdstream
    if getattr(original, "_tokenmill_quiet", False):
        return

    def print_to_stdstream(data, ignore_prefix: bool):
        if data.get("pid") == "raylet" and all(any(n in line for n in RAYLET_NOISE) for line in data.get("lines", [])):
            return
        original(data, ignore_prefix)

    print_to_stdstream._tokenmill_quiet = True
    ray_worker.print_to_stdstream = print_to_stdstream
