"""The built wheel, not the checkout, carries everything ``cfstream demo`` needs.

The test builds the wheel from a copy of the project (offline: no build isolation, so the running
environment's setuptools builds it), installs it with ``--no-deps --no-index`` into a fresh venv
whose only other import path is the running environment's site-packages (for the dependencies),
and runs the ``cfstream`` console script in an empty folder with no ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUPTOOLS_NEEDED = (77,)  # pyproject.toml's build-system requires


def _setuptools_ok() -> bool:
    try:
        major = int(version("setuptools").split(".")[0])
    except Exception:
        return False
    return (major,) >= SETUPTOOLS_NEEDED


def _clean_env() -> dict[str, str]:
    """The environment without anything that would put the checkout on the import path."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CFSTREAM_")}
    env["NO_COLOR"] = "1"
    return env


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "cfstream", src / "cfstream", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    out = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("cfstream-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed; the dependencies come from the running environment."""
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env(),
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # appended after the venv's own site-packages: the installed cfstream comes first
    (Path(purelib) / "zz_running_env_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + ["--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env_dir


@pytest.mark.slow
def test_the_installed_wheel_runs_the_whole_demo_from_an_empty_folder(tmp_path: Path) -> None:
    if not _setuptools_ok():
        pytest.fail(
            "building the wheel offline needs setuptools>=77 in this environment: "
            "pip install -e '.[dev]' (make test installs it)"
        )
    wheel = _build_wheel(tmp_path)
    env_dir = _fresh_venv(tmp_path, wheel)
    env = _clean_env()

    where = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import cfstream; print(cfstream.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    installed = Path(where).parent
    assert installed.is_relative_to(env_dir), f"cfstream imported from {where}, not the venv"

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [str(env_dir / "bin" / "cfstream"), "demo", "--json", "--quiet"],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["skipped"] == [], result["skipped"]
    assert {"vault", "docs"} <= set(result["sources"])
    sources = result["report"]["sources"]
    assert sources["vault"]["fetched"] > 0 and sources["docs"]["fetched"] > 0
    assert result["report"]["sink"]["inserted"] > 0
    assert result["dataset"] == str((empty / "demo.lance").resolve())
    assert sorted(p.name for p in empty.iterdir()) == ["demo.lance"]

    # every sample file of the checkout is in the installed package, hidden ones included
    def files(root: Path) -> set[str]:
        return {
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    expected = files(REPO / "cfstream" / "demo_data")
    assert expected and files(installed / "demo_data") == expected
