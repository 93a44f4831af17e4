"""A built wheel works outside the repository: the language files ship as package data and a run
without ``languages.dir`` uses them (not the built-in defaults)."""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = [pytest.mark.slow]

SHIPPED_LANGUAGES = 80   # configs/languages/*.yaml (hand-written/ holds their sources)


def _build_wheel(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest),
                    str(REPO)], check=True, timeout=300, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return next(dest.glob("tokenmill-*.whl"))


def _venv_with_wheel(root: Path, wheel: Path) -> Path:
    """A fresh venv holding only the wheel; its dependencies come from this interpreter's
    site-packages through a .pth file (whose own .pth files, e.g. the editable install's finder
    for the repository, are not processed), so it imports tokenmill from the wheel alone."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    py = root / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(purelib)
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    (purelib / "zz_deps.pth").write_text("\n".join(sorted(p for p in ours if os.path.isdir(p))) + "\n")
    return py


def test_wheel_ships_language_files_and_a_run_outside_the_repo_uses_them(tmp_path, shared_data):
    wheel = _build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert sum(1 for n in names if n.startswith("tokenmill/languages/") and n.count("/") == 2 and n.endswith(".yaml")) \
        == SHIPPED_LANGUAGES
    assert "tokenmill/languages/calibration.json" in names and "tokenmill/languages/hand-written/en.yaml" in names
    assert {"tokenmill/stages/quality/embed_stage.py", "tokenmill/stages/rephrase/styles/qa.yaml"} <= set(names)
    # packaging cannot forget a sub-package: every module of the tree is in the wheel
    tree = {f"tokenmill/{p.relative_to(REPO).as_posix()}" for top in ("engine", "stages", "cluster")
            for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts}
    assert tree <= set(names), sorted(tree - set(names))
    assert {"tokenmill/engine/executors/local/executor.py", "tokenmill/engine/io/readers.py"} <= set(names)
    py = _venv_with_wheel(tmp_path / "venv", wheel)

    work = tmp_path / "elsewhere"
    work.mkdir()
    with open(shared_data / "web_dev.jsonl", encoding="utf-8") as fh:
        (work / "in.jsonl").write_text("".join(fh.readline() for _ in range(20)), encoding="utf-8")
    (work / "run.yaml").write_text(json.dumps({
        "name": "outside", "input": {"paths": ["in.jsonl"]}, "output": {"path": "out"},
        "stages": [{"type": "langid"}, {"type": "heuristics"}], "ray": {"num_cpus": 2}}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}

    where = subprocess.run([str(py), "-c", "import tokenmill.languages as l, tokenmill.engine as e; "
                            "print(l.shipped_dir()); print(e.__file__)"], cwd=work, env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    assert all(not p.startswith(str(REPO)) for p in where), where  # the wheel's copy, not the repository's

    valid = subprocess.run([str(py), "-m", "tokenmill.engine.cli", "validate", "run.yaml"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    assert valid.returncode == 0, valid.stderr
    assert f"{SHIPPED_LANGUAGES} language files from {where[0]}" in valid.stdout

    run = subprocess.run([str(py), "-m", "tokenmill.engine.cli", "run", "run.yaml"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((work / "out" / "report.json").read_text())
    assert report["language_files"] == {"folder": where[0], "languages": SHIPPED_LANGUAGES}
    assert report["output"]["docs"] > 0
