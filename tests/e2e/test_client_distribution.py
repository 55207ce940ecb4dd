"""The client as a distribution of its own (clients/orders-client): installed into a fresh
virtual environment without the service's dependencies, its `orders` command line runs,
a typed program makes calls against the real worker, and `mypy --strict` passes on that
program with only the client installed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .contract import STATUSES, new_customer_id
from .worker import REPO_ROOT, Worker

PROGRAM = Path(__file__).with_name("client_program.py")
STEP_TIMEOUT = 180.0
# The service's dependencies: none of them may be importable where only the client is.
SERVICE_ONLY = [
    "service",
    "fastapi",
    "faststream",
    "pymongo",
    "bson",
    "motor",
    "uvicorn",
    "pydantic_settings",
    "prometheus_client",
    "orjson",
    "aiohttp",
]
CLIENT_PACKAGES = ["orders_client", "schemas", "orders_vocabulary"]


def _env(**extra: str) -> dict[str, str]:
    """This environment without anything that points at the development venv or the repo."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT"}
    }
    return {**env, **extra}


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to build the client distribution (make install installs it)")
    return uv


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the workspace member `orders-client[cli]` installed from a built
    wheel (not editable), at the versions of uv.lock; from uv's cache when it has them."""
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    sync = [
        _uv(),
        "sync",
        "--frozen",
        "--package",
        "orders-client",
        "--extra",
        "cli",
        "--no-default-groups",
        "--no-editable",
        # The wheel is built from sources outside the member's folder: never reuse a build.
        "--reinstall-package",
        "orders-client",
        "--python",
        sys.executable,
    ]
    env = _env(UV_PROJECT_ENVIRONMENT=str(venv))
    done = _run([*sync, "--offline"], REPO_ROOT, env)
    if done.returncode != 0:  # something not in the cache yet: fetch it
        done = _run(sync, REPO_ROOT, env)
    assert done.returncode == 0, done.stderr
    yield venv
    shutil.rmtree(venv, ignore_errors=True)


def test_the_sdist_builds_a_wheel_of_the_client_packages(tmp_path: Path) -> None:
    """`uv build` makes the sdist first and the wheel from it, away from the repository."""
    build = [_uv(), "build", "--package", "orders-client", "--out-dir", str(tmp_path)]
    done = _run([*build, "--offline"], REPO_ROOT)
    if done.returncode != 0:  # the build backend not in the cache yet: fetch it
        done = _run(build, REPO_ROOT)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("orders_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names} == {
        *CLIENT_PACKAGES,
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    for package in CLIENT_PACKAGES:
        assert f"{package}/py.typed" in names
        assert f"{package}/__init__.py" in names
    assert "orders_client/__main__.py" in names


def _python(venv: Path) -> str:
    return str(venv / "bin" / "python")


def test_the_client_installs_without_the_service_dependencies(
    client_venv: Path, tmp_path: Path
) -> None:
    probe = (
        "import importlib.util, json, sys;"
        "names = json.loads(sys.argv[1]);"
        "specs = {n: importlib.util.find_spec(n) for n in names};"
        "print(json.dumps({n: s.origin if s else None for n, s in specs.items()}))"
    )
    names = SERVICE_ONLY + CLIENT_PACKAGES
    done = _run([_python(client_venv), "-c", probe, json.dumps(names)], tmp_path)
    assert done.returncode == 0, done.stderr
    origins = json.loads(done.stdout)
    assert {name: origins[name] for name in SERVICE_ONLY} == dict.fromkeys(SERVICE_ONLY)
    site_packages = next((client_venv / "lib").glob("python3.*/site-packages"))
    for package in CLIENT_PACKAGES:
        origin = Path(origins[package])
        assert origin.is_relative_to(site_packages), (package, origin)  # the wheel, not the repo
        assert (origin.parent / "py.typed").is_file(), package


@pytest.mark.parametrize(
    "command",
    [["bin/orders", "--help"], ["bin/python", "-m", "orders_client", "--help"]],
    ids=["orders", "python -m orders_client"],
)
def test_the_command_line_runs(client_venv: Path, tmp_path: Path, command: list[str]) -> None:
    done = _run(
        [str(client_venv / command[0]), *command[1:]], tmp_path, _env(COLUMNS="200", NO_COLOR="1")
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    for group in ("place", "list", "dead-letters"):
        assert group in done.stdout, done.stdout


async def test_a_typed_program_against_the_worker(
    client_venv: Path, worker: Worker, amqp_url: str, tmp_path: Path
) -> None:
    customer_id = new_customer_id()
    done = await asyncio.to_thread(
        _run, [_python(client_venv), str(PROGRAM), amqp_url, customer_id], tmp_path
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["statuses"] == STATUSES
    placed = result["placed"]
    assert (placed["customer_id"], placed["status"]) == (customer_id, "pending")
    assert (placed["total"], placed["version"]) == ("15.00", 1)
    assert result["cancelled"] == {**placed, "status": "cancelled", "version": 2}
    assert result["refused"] == ["cancelled", "completed"]
    assert result["read"] == result["cancelled"]


def test_mypy_strict_passes_on_a_program_with_only_the_client(
    client_venv: Path, tmp_path: Path
) -> None:
    """The program is copied out of the repo so that only the venv's packages resolve."""
    program = tmp_path / PROGRAM.name
    shutil.copyfile(PROGRAM, program)
    mypy = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        "--python-executable",
        _python(client_venv),
    ]
    done = _run([*mypy, program.name], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found in 1 source file" in done.stdout
    # And the check can fail: a service package does not resolve there.
    (tmp_path / "uses_the_service.py").write_text("import pymongo\n")
    done = _run([*mypy, "uses_the_service.py"], tmp_path)
    assert done.returncode == 1, done.stdout
    assert 'module named "pymongo"' in done.stdout
