"""Structure of docker-compose.yml and the Dockerfile that a deployment relies on.

Nothing here needs a Docker engine: the file is read as YAML, and `docker compose
config -q` (run only where the Docker client and its compose plugin exist) validates
it against the Compose specification without one.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"

EXPECTED_SERVICES = {"postgres", "redis", "mlflow", "migrate", "api", "worker", "webhooks",
                     "worker-gpu"}
ONE_SHOT_SERVICES = {"migrate"}
APP_SERVICES = ("api", "worker", "worker-gpu")
TAAS_IMAGE_SERVICES = ("mlflow", "migrate", "api", "worker", "worker-gpu")

# ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR; `$$` is Compose's escape for a literal `$`.
_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Resolve Compose interpolation the way `docker compose` does with `env` as its environment.

    Enough of the spec for this file: `$$`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`.
    """
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        if op == ":-":
            return env.get(name) or arg
        if op == "-":
            return env.get(name, arg)
        return env.get(name, "")

    return _INTERPOLATION.sub(replace, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def command_args(service: dict) -> list[str]:
    command = service.get("command")
    assert command, "service has no command"
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def command_line(service: dict) -> str:
    return " ".join(command_args(service))


def option(args: list[str], *names: str) -> str:
    """The value of a command-line option given as `--name value` or `--name=value`."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    raise AssertionError(f"none of {names} in {args}")


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: dict) -> dict[str, str]:
    """Dependency name -> condition (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def healthcheck_command(service: dict) -> str:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return test
    assert test[0] in {"CMD", "CMD-SHELL"}, test
    return " ".join(test[1:])


# --- services and their entry points ---------------------------------------------------------


def test_expected_services_exist(services: dict) -> None:
    assert set(services) >= EXPECTED_SERVICES, EXPECTED_SERVICES - set(services)


def test_long_running_services_have_healthchecks(services: dict) -> None:
    for name, service in services.items():
        if name in ONE_SHOT_SERVICES:
            continue
        check = service.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        assert check.get("test"), f"{name}: healthcheck without a test"
        assert check["test"] != ["NONE"], f"{name}: healthcheck disabled"


@pytest.mark.parametrize(
    ("name", "entry_point"),
    [
        ("api", "uvicorn api.main:app"),
        ("worker", "celery -A worker.celery_app worker"),
        ("worker-gpu", "celery -A worker.celery_app worker"),
        ("migrate", "alembic upgrade head"),
        ("mlflow", "mlflow server"),
    ],
)
def test_commands_are_the_contract_entry_points(
    services: dict, name: str, entry_point: str
) -> None:
    assert command_line(services[name]).startswith(entry_point), command_line(services[name])


def test_api_listens_on_published_port_8000(services: dict) -> None:
    api = services["api"]
    args = command_args(api)
    assert option(args, "--host") == "0.0.0.0"
    assert option(args, "--port") == "8000"
    assert any(str(port).endswith("8000:8000") for port in api.get("ports", [])), api.get("ports")
    assert "/readyz" in healthcheck_command(api)
    assert ":8000/" in healthcheck_command(api)


def test_migrate_runs_once(services: dict) -> None:
    migrate = services["migrate"]
    assert migrate.get("restart") == "no"
    assert depends_on(migrate).get("postgres") == "service_healthy"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_migrations_and_backends(services: dict, name: str) -> None:
    deps = depends_on(services[name])
    assert deps.get("migrate") == "service_completed_successfully", deps
    assert deps.get("postgres") == "service_healthy", deps
    assert deps.get("redis") == "service_healthy", deps
    assert deps.get("mlflow") == "service_healthy", deps


def test_mlflow_waits_for_postgres(services: dict) -> None:
    assert depends_on(services["mlflow"]).get("postgres") == "service_healthy"


@pytest.mark.parametrize(("name", "queues"), [("worker", ["cpu"]), ("webhooks", ["webhooks"]),
                                              ("worker-gpu", ["gpu"])])
def test_workers_consume_their_queues(services: dict, name: str, queues: list[str]) -> None:
    assert option(command_args(services[name]), "-Q", "--queues").split(",") == queues


@pytest.mark.parametrize(("name", "node"), [("worker", []), ("worker-gpu", []),
                                            ("webhooks", ["webhooks"])])
def test_worker_healthcheck_pings_its_own_node(services: dict, name: str,
                                               node: list[str]) -> None:
    # worker.ping asks <node>@<this container's hostname>, without importing torch.
    assert services[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.ping", *node]
    if node:
        assert option(command_args(services[name]), "-n", "--hostname") == f"{node[0]}@%h"


def test_gpu_worker_reserves_nvidia_gpus_in_its_own_profile(services: dict) -> None:
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and d.get("count")
        for d in devices
    ), devices
    assert gpu.get("profiles") == ["gpu"]
    # Everything else starts on a plain `docker compose up`, GPU or not.
    for name, service in services.items():
        if name != "worker-gpu":
            assert not service.get("profiles"), name
            assert "deploy" not in service or "devices" not in str(service["deploy"]), name


# --- configuration -----------------------------------------------------------------------------


def test_shared_environment_comes_from_the_extension_field(compose: dict, services: dict) -> None:
    shared = compose["x-taas-env"]
    for name in ("migrate", *APP_SERVICES):
        env = environment(services[name])
        for key, value in shared.items():
            assert env.get(key) == str(value), (name, key)
    assert shared["TAAS_DATA_DIR"] == "/data"
    assert interpolate(shared["TAAS_API_KEYS"]) == ""
    assert interpolate(shared["TAAS_API_KEYS"], {"TAAS_API_KEYS": "k1,k2"}) == "k1,k2"
    assert urlsplit(shared["TAAS_MLFLOW_UI_URL"]).hostname == "localhost"
    # The raw file must use the anchor, not copies that can drift apart.
    raw = COMPOSE_FILE.read_text()
    assert re.search(r"^x-taas-env:\s*&(\S+)", raw, re.MULTILINE)


def test_database_and_broker_urls(compose: dict) -> None:
    shared = compose["x-taas-env"]
    db = urlsplit(shared["TAAS_DATABASE_URL"])
    assert db.scheme == "postgresql+psycopg"
    assert db.hostname == "postgres"
    assert (db.port or 5432) == 5432
    assert db.path.lstrip("/") == "taas"
    broker = urlsplit(shared["TAAS_BROKER_URL"])
    assert broker.scheme == "redis"
    assert broker.hostname == "redis"


def test_postgres_matches_the_urls(compose: dict, services: dict) -> None:
    postgres = services["postgres"]
    env = environment(postgres)
    db = urlsplit(compose["x-taas-env"]["TAAS_DATABASE_URL"])
    assert env["POSTGRES_DB"] == db.path.lstrip("/")
    assert env["POSTGRES_USER"] == db.username
    assert env["POSTGRES_PASSWORD"] == db.password
    assert healthcheck_command(postgres).startswith("pg_isready")
    assert healthcheck_command(services["redis"]) == "redis-cli ping"


def test_mlflow_has_its_own_database(compose: dict, services: dict) -> None:
    args = command_args(services["mlflow"])
    store = urlsplit(option(args, "--backend-store-uri"))
    api_db = urlsplit(compose["x-taas-env"]["TAAS_DATABASE_URL"])
    assert store.scheme == "postgresql+psycopg"
    assert store.hostname == api_db.hostname
    mlflow_db = store.path.lstrip("/")
    assert mlflow_db
    assert mlflow_db != api_db.path.lstrip("/")

    # ... and that database is created when PostgreSQL initialises its volume.
    mounts = services["postgres"].get("configs", [])
    init_sql = []
    for mount in mounts:
        assert isinstance(mount, dict), "postgres config mounts need an explicit target"
        target = PurePosixPath(mount["target"])
        if target.parent == PurePosixPath("/docker-entrypoint-initdb.d"):
            assert target.suffix == ".sql", target
            init_sql.append(compose["configs"][mount["source"]]["content"])
    statements = " ".join(init_sql).lower()
    assert re.search(rf"create database\s+\"?{re.escape(mlflow_db)}\"?\b", statements), init_sql


def test_mlflow_serves_artifacts_and_accepts_the_service_name(
    compose: dict, services: dict
) -> None:
    mlflow = services["mlflow"]
    args = command_args(mlflow)
    assert "--serve-artifacts" in args
    destination = option(args, "--artifacts-destination")
    targets = [
        v.split(":")[1] if isinstance(v, str) else v.get("target")
        for v in mlflow.get("volumes", [])
    ]
    assert destination in targets, "MLflow artifacts are not on a volume"
    port = option(args, "--port")
    assert option(args, "--host") == "0.0.0.0"
    assert f":{port}/health" in healthcheck_command(mlflow)

    tracking = urlsplit(compose["x-taas-env"]["TAAS_MLFLOW_TRACKING_URI"])
    assert tracking.hostname == "mlflow"
    assert str(tracking.port) == port
    # MLflow 3 rejects Host headers outside --allowed-hosts (default: localhost and private
    # IPs), and the API and workers send "mlflow:5000".
    allowed = interpolate(option(args, "--allowed-hosts")).split(",")
    host_header = f"{tracking.hostname}:{tracking.port}"
    assert any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), host_header) for p in allowed)
    ui = urlsplit(compose["x-taas-env"]["TAAS_MLFLOW_UI_URL"])
    assert any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), ui.netloc) for p in allowed)
    assert any(str(p).endswith(f"{ui.port}:{port}") for p in mlflow.get("ports", []))


# --- volumes and image -------------------------------------------------------------------------


def test_referenced_volumes_and_configs_are_declared(compose: dict, services: dict) -> None:
    declared_volumes = set(compose.get("volumes") or {})
    declared_configs = set(compose.get("configs") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                source = volume.split(":", 1)[0] if ":" in volume else None
                kind = "bind" if source and source[0] in "./~$" else "volume"
            else:
                source, kind = volume.get("source"), volume.get("type", "volume")
            if kind == "volume" and source:
                assert source in declared_volumes, f"{name}: volume {source!r} is not declared"
        for config in service.get("configs", []):
            source = config if isinstance(config, str) else config["source"]
            assert source in declared_configs, f"{name}: config {source!r} is not declared"


def test_api_and_workers_share_the_data_volume(compose: dict, services: dict) -> None:
    data_dir = compose["x-taas-env"]["TAAS_DATA_DIR"]
    sources = set()
    for name in APP_SERVICES:
        mounts = [v for v in services[name].get("volumes", []) if isinstance(v, str)]
        matching = [v.split(":")[0] for v in mounts if v.split(":")[1] == data_dir]
        assert matching, f"{name}: nothing mounted at {data_dir}"
        sources.update(matching)
    assert len(sources) == 1, sources


def _dockerfile(service: dict) -> Path:
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (ROOT / build.get("context", ".")).resolve()
    return (context / build.get("dockerfile", "Dockerfile")).resolve()


def test_taas_services_build_the_one_dockerfile(services: dict) -> None:
    builders = {name: s for name, s in services.items() if "build" in s}
    assert set(TAAS_IMAGE_SERVICES) <= set(builders), set(TAAS_IMAGE_SERVICES) - set(builders)
    dockerfiles = {_dockerfile(s) for s in builders.values()}
    assert dockerfiles == {(ROOT / "Dockerfile").resolve()}, dockerfiles
    # One CPU image name (Compose builds it once for all of them); the GPU worker's build
    # differs only by the argument that takes PyPI's CUDA torch.
    cpu = {name: s for name, s in builders.items() if name != "worker-gpu"}
    assert len({s.get("image") for s in cpu.values()}) == 1
    assert services["worker-gpu"]["build"]["args"] == {"TORCH_INDEX_URL": ""}
    assert services["worker-gpu"]["image"] != services["worker"]["image"]


def test_dockerfile_installs_the_project(services: dict) -> None:
    dockerfile = _dockerfile(services["api"])
    assert dockerfile.is_file(), dockerfile
    text = re.sub(r"\\\n", " ", dockerfile.read_text())  # join continuation lines
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    instructions = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]

    assert instructions[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim")
    stages = [args for op, args in instructions if op == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"], "multi-stage, one base"
    runs = [args for op, args in instructions if op == "RUN"]
    torch_at = next(
        i for i, r in enumerate(runs) if re.search(r"pip install\b.*torch==2\.13\.0", r)
    )
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install\b.*/src$", r))
    assert torch_at < project_at, "torch must be installed (and cached) before the project"

    copies = " ".join(args for op, args in instructions if op in {"COPY", "ADD"})
    assert "--from=build /opt/taas" in copies
    assert "alembic.ini" in copies
    assert "migrations" in copies
    assert any(op == "ENV" and "PYTHONUNBUFFERED=1" in args for op, args in instructions)
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    users = [args.split(":")[0] for op, args in instructions if op == "USER"]
    assert users, "the image must switch to a non-root USER"
    assert users[-1] not in {"root", "0"}, "the image must not run as root"
    cmd = [args for op, args in instructions if op == "CMD"]
    assert cmd
    assert "api.main:app" in cmd[-1]

    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "data", "mlruns"):
        assert entry in ignored, f".dockerignore lacks {entry}"


# --- the Compose specification itself ----------------------------------------------------------

_NO_COMPOSE_PLUGIN = ("unknown command", "is not a docker command", "unknown shorthand flag")


@pytest.mark.parametrize("profile_args", [[], ["--profile", "gpu"]], ids=["default", "gpu"])
def test_docker_compose_config_validates(profile_args: list[str]) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker client is not on PATH")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), *profile_args, "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and any(marker in output for marker in _NO_COMPOSE_PLUGIN):
        first_line = output.strip().splitlines()[0]
        pytest.skip(f"the docker client has no compose plugin ({first_line})")
    assert result.returncode == 0, output
