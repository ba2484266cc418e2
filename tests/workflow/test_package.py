"""``pip install .`` (not editable) gives a layershift that works outside the checkout: the schema and any
data the library needs ship inside the package.

Reinstalling torch & co. would take minutes, so the fresh venv borrows the project venv's dependencies through
a ``.pth`` line (a directory named in a .pth is put on sys.path without running *its* .pth files, so the
project venv's editable install of src/ stays out), and layershift itself is built from a copy of the
sources with ``pip install --no-deps --no-build-isolation``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.support.study import ROOT


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    assert found, f"no site-packages in {venv}"
    return found[0]


def test_non_editable_install_validates_a_config_from_another_directory(tmp_path):
    source = tmp_path / "source"  # a copy, so the build writes nothing into the checkout
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site_packages(venv) / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"]
    subprocess.run([*install, "--no-build-isolation", str(source)], check=True, env=env, cwd=tmp_path)
    shutil.rmtree(source)  # nothing may still point at the sources it was built from

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import layershift.study.schema as c; print(c.__file__); print(c.SCHEMA_PATH.exists())",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
        check=True,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(site_packages(venv)), where  # the installed copy, not src/
    assert where[1] == "True"
    proc = subprocess.run(
        [str(venv / "bin" / "layershift"), "validate", str(ROOT / "config.yaml"), "--directory", str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith(": ok")
