"""The deployment files in deploy/ agree with the code they deploy.

No image is built and no cluster is started here. Each file is read the way its tool reads it
(YAML documents, a Dockerfile's instructions, the shell scripts inside commands) and compared with
the real thing: every `dvolver` and `ray` command against those CLIs' own click commands, health
checks against the service's health route, images against each other and pyproject, addresses
against the names Compose and KubeRay give the Ray head.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_GPU = DEPLOY / "docker-compose.gpu.yml"
LAUNCHER = DEPLOY / "ray-cluster.yaml"
KUBERAY = DEPLOY / "kuberay"
README = DEPLOY / "README.md"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))

COMPOSE_SERVICES = {"postgres", "ray-head", "ray-worker", "api", "runner"}
DEFAULT_GCS_PORT = "6379"  # `ray start --head` and KubeRay both use it unless told otherwise


# ---------------------------------------------------------------------------------------- readers

@cache
def docs(path: Path) -> tuple[dict[str, Any], ...]:
    found = tuple(d for d in yaml.safe_load_all(path.read_text()) if d is not None)
    assert found and all(isinstance(d, dict) for d in found), f"{path}: every YAML document must be a mapping"
    return found


def doc(path: Path) -> dict[str, Any]:
    (only,) = docs(path)
    return only


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@cache
def health_route() -> str:
    """The service's health path, read from its router (importing the service would load torch)."""
    tree = ast.parse((ROOT / "service" / "routes" / "health.py").read_text())
    paths = [dec.args[0].value for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
             for dec in node.decorator_list
             if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "get"
             and dec.args and isinstance(dec.args[0], ast.Constant) and "health" in dec.args[0].value]
    assert len(paths) == 1, f"expected one health route in service/routes/health.py, found {paths}"
    return paths[0]


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def docker_args() -> dict[str, str]:
    return dict(rest.partition("=")[::2] for keyword, rest in dockerfile() if keyword == "ARG")


def docker_exec_form(keyword: str) -> list[str]:
    values = [rest for k, rest in dockerfile() if k == keyword]
    assert values, f"the Dockerfile has no {keyword}"
    # The shell form would put /bin/sh -c in front, which does not pass signals on.
    form = json.loads(values[-1])
    assert isinstance(form, list), f"{keyword} must be in exec form (a JSON list)"
    return form


def image_healthcheck_url() -> str:
    (check,) = [rest for k, rest in dockerfile() if k == "HEALTHCHECK"]
    (url,) = re.findall(r"https?://[^'\"\s]+", check)
    return url


# ------------------------------------------------------------------------------------ the CLIs

@cache
def clis() -> dict[str, Any]:
    """The root commands. Typer vendors its own click, so they are handled by duck typing."""
    import typer
    from ray.scripts.scripts import cli as ray_cli

    import dvolver.cli

    return {"dvolver": typer.main.get_command(dvolver.cli.app), "ray": ray_cli}


def is_invocation(words: list[str]) -> bool:
    """`dvolver serve ...` is; `--name dvolver -p 8000` (a container named dvolver) is not."""
    return len(words) > 1 and words[0] in clis() and words[1] in clis()[words[0]].commands


def parse_invocation(words: list[str]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Checks a command line against the real CLI; returns its subcommand path and its options by
    parameter name (repeatable options as lists). Fails naming any subcommand, option or argument
    the CLI does not have."""
    command = clis()[words[0]]
    path: list[str] = [words[0]]
    args = words[1:]
    while hasattr(command, "commands"):
        assert args and args[0] in command.commands, f"{' '.join(path)} has no subcommand {args[:1]}"
        path.append(args[0])
        command, args = command.commands[args[0]], args[1:]
    options = {o: p for p in command.params if p.param_type_name == "option" for o in p.opts + p.secondary_opts}
    values: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            assert name in options, f"`{' '.join(path)}` has no option {name} (in: {' '.join(words)})"
            param = options[name]
            if param.is_flag or param.count:
                assert not eq, f"{name} is a flag and takes no value"
                values[param.name] = name not in param.secondary_opts
            else:
                if not eq:
                    i += 1
                    assert i < len(args), f"{name} needs a value (in: {' '.join(words)})"
                    value = args[i]
                if param.multiple:
                    values.setdefault(param.name, []).append(value)
                else:
                    values[param.name] = value
        else:
            positional.append(word)
        i += 1
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    most = float("inf") if any(p.nargs < 0 for p in arguments) else sum(p.nargs for p in arguments)
    least = sum(max(p.nargs, 1) for p in arguments if p.required)
    assert least <= len(positional) <= most, f"`{' '.join(path)}` got arguments {positional} (in: {' '.join(words)})"
    return tuple(path[1:]), values


def script_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script, without `exec` and leading VAR=value assignments."""
    commands = []
    for part in re.split(r"&&|\|\||;|\n", script):
        words = shlex.split(part, comments=True)
        while words and (words[0] == "exec" or re.fullmatch(r"[A-Za-z_]\w*=.*", words[0])):
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def argv_commands(argv: list[str] | str) -> list[list[str]]:
    """What a container command runs: itself, or the commands of its `sh -c` script."""
    words = shlex.split(argv) if isinstance(argv, str) else [str(w) for w in argv]
    if words and Path(words[0]).name in ("sh", "bash"):
        flag = next((i for i, w in enumerate(words) if re.fullmatch(r"-\w*c", w)), None)
        assert flag is not None and flag + 1 < len(words), f"a shell without a -c script: {words}"
        return script_commands(words[flag + 1])
    return [words]


Invocation = tuple[str, tuple[str, ...], dict[str, Any]]


def invocations(argv: list[str] | str) -> list[Invocation]:
    """Every dvolver and ray command in a container command, each checked against its CLI."""
    return [(words[0], *parse_invocation(words)) for words in argv_commands(argv) if is_invocation(words)]


def find(found: list[Invocation], cli: str, *path: str) -> dict[str, Any]:
    hits = [opts for name, p, opts in found if name == cli and p == path]
    assert len(hits) == 1, f"expected one `{cli} {' '.join(path)}`, found {len(hits)}"
    return hits[0]


def compose_fields(value: str) -> list[str]:
    """A short-syntax volume or port split at its colons, except those inside ${VAR:-default}."""
    return re.split(r":(?![^{]*\})", value)


def db_envvar() -> str:
    """The variable `dvolver --db` reads: a deployment setting it configures every command."""
    (param,) = [p for p in clis()["dvolver"].commands["runner"].params if p.name == "db"]
    assert isinstance(param.envvar, str)
    return param.envvar


def check_driver_has_a_node(found: list[Invocation], where: str) -> None:
    """A Ray driver given HOST:PORT needs a Ray node on its own machine (ray.init looks for a local
    raylet); only a ray:// (Ray Client) address works without one."""
    for cli, path, opts in found:
        if cli != "dvolver" or "ray_address" not in opts or opts["ray_address"].startswith("ray://"):
            continue
        if path == ("serve",) and int(opts.get("runners", 1)) == 0:
            continue  # no runners, so this process never drives Ray
        joins = [o for c, p, o in found if (c, p) == ("ray", ("start",)) and o.get("address") == opts["ray_address"]]
        assert joins, f"{where}: `dvolver {path[0]}` drives Ray at {opts['ray_address']} without first joining it " \
                      "with `ray start --address=...`"


# --------------------------------------------------------------------------------------- YAML

@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses_to_mappings(path: Path) -> None:
    assert docs(path)


def test_the_expected_files_exist() -> None:
    for path in (DOCKERFILE, COMPOSE, COMPOSE_GPU, LAUNCHER, README, DEPLOY / ".env.example",
                 KUBERAY / "ray-cluster.yaml", KUBERAY / "dvolver.yaml", KUBERAY / "data-volume.yaml",
                 ROOT / ".dockerignore"):
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing"


# ---------------------------------------------------------------------------------- Dockerfile

def test_dockerfile_base_image_has_a_python_the_package_accepts() -> None:
    (base,) = [rest for k, rest in dockerfile() if k == "FROM"]
    image = docker_args().get(base.strip("${}"), base) if base.startswith("$") else base
    version = re.match(r"python:(\d+)\.(\d+)", image)
    assert version, f"expected a python:X.Y base image, got {image}"
    least = re.search(r">=\s*(\d+)\.(\d+)", pyproject()["project"]["requires-python"])
    assert tuple(map(int, version.groups())) >= tuple(map(int, least.groups()))


def test_dockerfile_installs_the_package_with_constraints_and_postgres() -> None:
    runs = [rest for k, rest in dockerfile() if k == "RUN"]
    args = docker_args()
    torch = [r for r in runs if re.search(r"pip install .*\btorch\b", r)]
    assert torch and "-c constraints.txt" in torch[0] and "${TORCH_INDEX}" in torch[0], \
        "torch must come from TORCH_INDEX at the version constraints.txt pins"
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu", "the default image is the CPU one"
    package = [r for r in runs if re.search(r"pip install .*\"\.\[", r)]
    assert len(package) == 1 and "-c constraints.txt" in package[0]
    extras = re.search(r"\"\.\[([^\]]+)\]\"", package[0]).group(1)
    extras = args.get(extras.strip("${}"), extras) if extras.startswith("$") else extras
    assert "postgres" in extras.split(",")
    assert set(extras.split(",")) <= set(pyproject()["project"]["optional-dependencies"])
    assert "ray[default]==${RAY_VERSION}" in package[0], "Ray must be pinned to RAY_VERSION, with its dashboard"


def test_dockerfile_copies_everything_the_package_build_needs() -> None:
    copied = {src.rstrip("/") for k, rest in dockerfile() if k == "COPY"
              for src in [w for w in rest.split() if not w.startswith("--")][:-1]}
    packages = {p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = packages | {"pyproject.toml", "constraints.txt", pyproject()["project"]["readme"]}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    order = [k for k, rest in dockerfile() if k in ("COPY", "RUN") and ("constraints.txt" in rest)]
    assert order[0] == "COPY", "constraints.txt must be copied before pip reads it"


def test_the_package_ships_every_dashboard_file() -> None:
    """A non-editable install (the image's, a wheel's) holds only what package-data names: a dashboard
    file outside its globs, such as the vendored plotly bundle in a folder of its own, would be missing."""
    service = ROOT / "service"
    shipped = {p for pattern in pyproject()["tool"]["setuptools"]["package-data"]["service"]
               for p in service.glob(pattern) if p.is_file()}
    files = {p for p in (service / "dashboard").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert (service / "dashboard" / "vendor" / "plotly-basic.min.js") in files
    assert files <= shipped, f"not in the package: {sorted(str(p.relative_to(ROOT)) for p in files - shipped)}"


def test_dockerfile_runs_unprivileged_with_a_writable_home() -> None:
    users = [rest for k, rest in dockerfile() if k == "USER"]
    # By number: Kubernetes' runAsNonRoot cannot check a user name.
    assert users and re.fullmatch(r"\d+(:\d+)?", users[-1]), "USER must be a numeric uid"
    uid = users[-1].split(":")[0]
    assert uid != "0", "the image must not run as root"
    created = re.search(rf"useradd [^&]*--uid {uid}\b[^&]*?\s(\w+)\s*(?:&&|$)", " ".join(
        rest for k, rest in dockerfile() if k == "RUN"))
    assert created, f"no useradd makes uid {uid}"
    env = " ".join(rest for k, rest in dockerfile() if k == "ENV")
    # The Ray cluster launcher reads HOME from the image's environment (default /root).
    assert re.search(rf"\bHOME=/home/{created.group(1)}\b", env)
    (deployment, _) = api_deployment()
    assert str(deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == uid


def test_dockerfile_command_exposed_port_and_healthcheck_agree() -> None:
    assert docker_exec_form("ENTRYPOINT")[0] == "tini", "tini reaps the daemons `ray start` leaves behind"
    cmd = docker_exec_form("CMD")
    assert cmd[0] in pyproject()["project"]["scripts"], f"{cmd[0]} is not one of the package's entry points"
    serve = find(invocations(cmd), "dvolver", "serve")
    assert serve["host"] == "0.0.0.0", "inside a container, loopback is unreachable from outside"
    (exposed,) = [rest for k, rest in dockerfile() if k == "EXPOSE"]
    assert exposed.split("/")[0] == serve["port"]
    url = urlsplit(image_healthcheck_url())
    assert url.path == health_route() and str(url.port) == serve["port"]
    assert serve["data_root"] == ["/data"]


def test_dockerignore_keeps_secrets_out_and_sources_in() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        # Docker's rule: the last pattern matching the path or one of its parent folders wins.
        parts = path.split("/")
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").strip("/")
            for n in range(1, len(parts) + 1):
                prefix = "/".join(parts[:n])
                if fnmatch.fnmatchcase(prefix, pattern) or (
                        pattern.startswith("**/") and fnmatch.fnmatchcase(parts[n - 1], pattern[3:])):
                    result = not negate
                    break
        return result

    for kept in ("pyproject.toml", "README.md", "constraints.txt", "dvolver/cli.py", "search_spaces/nasnet.py",
                 "service/app.py", "service/dashboard/index.html"):
        assert not ignored(kept), f".dockerignore drops {kept}, which the image needs"
    for dropped in (".git/config", ".venv/bin/python", "runs.db", "deploy/.env", ".env", "deploy/data/x.npz",
                    "dvolver/__pycache__/cli.cpython-311.pyc", "dvolver_front_1.png"):
        assert ignored(dropped), f".dockerignore lets {dropped} into the build context"


# ------------------------------------------------------------------------------------- Compose

def compose_services(path: Path = COMPOSE) -> dict[str, dict[str, Any]]:
    return doc(path)["services"]


def dvolver_image() -> str:
    built = {s["image"] for s in compose_services().values() if "build" in s}
    assert len(built) == 1, f"every built service must tag the one image, got {built}"
    return built.pop()


def dvolver_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose_services().items() if s.get("image") == dvolver_image()}


def test_compose_has_every_service_from_one_image() -> None:
    services = compose_services()
    assert set(services) >= COMPOSE_SERVICES
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
    assert set(dvolver_services()) == COMPOSE_SERVICES - {"postgres"}, "Ray needs the same image on every node"
    for name, service in dvolver_services().items():
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert (COMPOSE.parent / build["context"] / "pyproject.toml").is_file(), "the context is the repository"
        assert service.get("command"), f"{name} must say what it runs"
    name, _, tag = dvolver_image().rpartition(":")
    assert name == "dvolver" and tag.startswith(pyproject()["project"]["version"])
    assert services["postgres"]["image"].startswith("postgres:")


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_compose_commands_use_the_real_cli(path: Path) -> None:
    for name, service in compose_services(path).items():
        if "command" in service:
            found = invocations(service["command"])
            assert found, f"{name} runs neither dvolver nor ray"
            check_driver_has_a_node(found, f"{path.name}: {name}")


def test_compose_ray_nodes_and_drivers_point_at_the_head() -> None:
    services = compose_services()
    head = find(invocations(services["ray-head"]["command"]), "ray", "start")
    assert head.get("head") and head.get("block"), "the head must be `ray start --head --block` to stay up"
    address = f"ray-head:{head.get('port', DEFAULT_GCS_PORT)}"
    worker = find(invocations(services["ray-worker"]["command"]), "ray", "start")
    assert worker["address"] == address and worker.get("block") and not worker.get("head")
    runner = invocations(services["runner"]["command"])
    assert find(runner, "ray", "start")["address"] == address
    assert find(runner, "ray", "start")["num_cpus"] == "0", "nothing may be scheduled beside the runner"
    assert find(runner, "dvolver", "runner")["ray_address"] == address
    api = find(invocations(services["api"]["command"]), "dvolver", "serve")
    assert api["host"] == "0.0.0.0" and api.get("open_reads") is False, "beyond loopback reads need a token"
    if int(api.get("runners", 1)) > 0:
        assert api["ray_address"] == address


def test_compose_depends_on_existing_healthy_services() -> None:
    services = compose_services()
    for name, service in services.items():
        needs = service.get("depends_on", {})
        for other, spec in (needs.items() if isinstance(needs, dict) else ((n, {}) for n in needs)):
            assert other in services, f"{name} depends on a service that does not exist: {other}"
            condition = spec.get("condition", "service_started")
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                check = services[other].get("healthcheck")
                inherited = other in dvolver_services()  # the image's own HEALTHCHECK
                assert (check and not check.get("disable")) or (check is None and inherited), \
                    f"{name} waits for {other} to be healthy, but {other} has no health check"


def test_compose_healthchecks_probe_what_each_service_serves() -> None:
    services = compose_services()
    api_port = find(invocations(services["api"]["command"]), "dvolver", "serve")["port"]
    assert str(urlsplit(image_healthcheck_url()).port) == api_port
    for name, service in dvolver_services().items():
        check = service.get("healthcheck")
        if name == "api":
            continue  # the image's check is the API's own
        # The image's HEALTHCHECK probes the API port, where nothing listens on a Ray node or runner.
        assert check is not None, f"{name} would inherit the image's API health check"
        for url in re.findall(r"https?://[^'\"\s]+", json.dumps(check.get("test", ""))):
            assert urlsplit(url).port != int(api_port), f"{name} probes the API's port"
    assert services["postgres"]["healthcheck"]["test"]


def test_compose_ports_and_volumes_are_well_formed() -> None:
    top_volumes = set(doc(COMPOSE).get("volumes") or {})
    port_re = re.compile(r"(?:(?:\d{1,3}(?:\.\d{1,3}){3}):)?(?:\d+|\$\{[A-Z_]+(?::-\d+)?\}):(\d+)(?:/(?:tcp|udp))?")
    for name, service in compose_services().items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port_re.fullmatch(port), f"{name}: malformed port {port!r}"
        for volume in service.get("volumes", []):
            source, target, *mode = compose_fields(volume)
            assert target.startswith("/") and mode in ([], ["ro"], ["rw"]), f"{name}: malformed volume {volume!r}"
            if not source.startswith(("/", ".", "~", "$")):
                assert source in top_volumes, f"{name}: named volume {source} is not declared"
    services = compose_services()
    api_port = find(invocations(services["api"]["command"]), "dvolver", "serve")["port"]
    assert any(p.endswith(f":{api_port}") for p in services["api"]["ports"]), "the API's port is not published"
    for port in services["ray-head"].get("ports", []):
        assert port.startswith("127.0.0.1:"), "Ray's dashboard submits jobs: loopback only"


def test_compose_data_folder_is_the_same_everywhere_and_is_the_data_root() -> None:
    mounts = {name: {compose_fields(v)[1]: compose_fields(v)[0] for v in s.get("volumes", [])}
              for name, s in dvolver_services().items()}
    api = find(invocations(compose_services()["api"]["command"]), "dvolver", "serve")
    (root,) = api["data_root"]
    sources = {m.get(root) for m in mounts.values()}
    assert len(sources) == 1 and None not in sources, f"every node must mount one folder at {root}: {mounts}"


def test_compose_store_url_comes_from_the_environment() -> None:
    services = compose_services()
    pg = services["postgres"]["environment"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?.+\}", pg["POSTGRES_PASSWORD"]), "no password in the file"
    for name in ("api", "runner"):
        url = services[name]["environment"][db_envvar()]
        password = re.search(r":(\$\{POSTGRES_PASSWORD[^}]*\})@", url)
        assert password, f"{name}: the store URL must take its password from POSTGRES_PASSWORD"
        parts = urlsplit(url.replace(password.group(1), "secret"))
        assert parts.scheme == "postgresql+psycopg", "the postgres extra installs psycopg 3"
        assert parts.hostname == "postgres" and parts.port == 5432 and parts.path == f"/{pg['POSTGRES_DB']}"
        assert parts.username == pg["POSTGRES_USER"]
        for _, _, opts in invocations(services[name]["command"]):
            assert "db" not in opts, f"{name}: a --db URL would show its password in the process list"
    for name in ("ray-head", "ray-worker"):
        assert db_envvar() not in (services[name].get("environment") or {}), "Ray nodes need no database password"


def test_compose_ray_token_reaches_every_ray_node_and_driver() -> None:
    tokens = set()
    for name, service in compose_services().items():
        found = invocations(service.get("command", []))
        if not any(cli == "ray" or "ray_address" in opts for cli, _, opts in found):
            continue
        env = service.get("environment") or {}
        assert env.get("RAY_AUTH_MODE") == "token", f"{name} runs Ray without token authentication"
        tokens.add(env.get("RAY_AUTH_TOKEN"))
    assert len(tokens) == 1 and re.fullmatch(r"\$\{RAY_AUTH_TOKEN:\?.+\}", tokens.pop()), \
        "one token for all, from the environment, required"


def test_compose_gpu_override_switches_every_node_to_one_cuda_image() -> None:
    base, gpu = compose_services(), compose_services(COMPOSE_GPU)
    assert set(gpu) <= set(base)
    assert set(gpu) == set(dvolver_services()), "a CUDA worker needs a CUDA-image runner beside it"
    images = {s["image"] for s in gpu.values()}
    assert len(images) == 1 and images.pop() != dvolver_image()
    assert all(s["build"]["args"]["TORCH_INDEX"] != docker_args()["TORCH_INDEX"] for s in gpu.values())
    worker = gpu["ray-worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert find(invocations(worker["command"]), "ray", "start")["num_gpus"] == str(device["count"])


def test_compose_files_match_the_compose_spec_schema() -> None:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema ships the compose-spec JSON schema")
    import importlib.resources

    import jsonschema

    schema = json.loads((importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
                         / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    for path in (COMPOSE, COMPOSE_GPU):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc(path))]
        assert not errors, f"{path.name}: {errors}"


def compose_binary() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        version = subprocess.run([standalone, "version", "--short"], capture_output=True, text=True).stdout
        if version.strip().lstrip("v").startswith("2"):  # 1.x predates the compose spec
            return [standalone]
    return None


def test_docker_compose_config_accepts_the_files() -> None:
    compose = compose_binary()
    if compose is None:
        pytest.skip("neither `docker compose` nor a docker-compose v2 is installed")
    env = {**os.environ, "POSTGRES_PASSWORD": "test-only", "RAY_AUTH_TOKEN": "test-only"}
    for files in ([COMPOSE], [COMPOSE, COMPOSE_GPU]):
        args = [a for f in files for a in ("-f", str(f))]
        done = subprocess.run([*compose, *args, "config", "-q"], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
    # Without the password it must refuse rather than start PostgreSQL with an empty one. An empty
    # --env-file stands in for deploy/.env, which a developer's checkout may hold with a password.
    env.pop("POSTGRES_PASSWORD")
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        done = subprocess.run([*compose, "--env-file", empty.name, "-f", str(COMPOSE), "config", "-q"],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr, done.stderr


# ------------------------------------------------------------------------------------- KubeRay

def kube_objects() -> list[dict[str, Any]]:
    return [d for path in sorted(KUBERAY.glob("*.yaml")) for d in docs(path)]


def kube(kind: str) -> list[dict[str, Any]]:
    return [d for d in kube_objects() if d.get("kind") == kind]


def raycluster() -> dict[str, Any]:
    (cluster,) = kube("RayCluster")
    return cluster


def head_service_address() -> str:
    """What KubeRay creates for the head: Service <RayCluster name>-head-svc, unless renamed."""
    spec = raycluster()["spec"]["headGroupSpec"]
    name = (spec.get("headService") or {}).get("metadata", {}).get("name") \
        or f"{raycluster()['metadata']['name']}-head-svc"
    return f"{name}:{spec['rayStartParams'].get('port', DEFAULT_GCS_PORT)}"


def ray_groups() -> list[tuple[str, dict[str, Any]]]:
    spec = raycluster()["spec"]
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]


def api_deployment() -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = kube("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def test_kubernetes_objects_have_the_required_fields() -> None:
    for obj in kube_objects():
        assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), obj
    kinds = sorted(d["kind"] for d in kube_objects())
    assert kinds == ["Deployment", "PersistentVolumeClaim", "RayCluster", "Service"]
    assert raycluster()["apiVersion"] == "ray.io/v1"
    assert {d["apiVersion"] for d in kube("Deployment")} == {"apps/v1"}


def test_raycluster_groups_are_complete() -> None:
    spec = raycluster()["spec"]
    assert spec["rayVersion"] == docker_args()["RAY_VERSION"], "rayVersion must be the Ray inside the image"
    assert spec["workerGroupSpecs"], "a cluster without workers trains nothing"
    for name, group in ray_groups():
        params = group["rayStartParams"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), \
            f"{name}: KubeRay's rayStartParams is a map of strings (quote numbers and booleans)"
        containers = group["template"]["spec"]["containers"]
        assert containers and containers[0].get("image") and containers[0].get("name"), name
        assert "command" not in containers[0], f"{name}: KubeRay writes the Ray container's command itself"
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]


def test_raycluster_start_params_are_real_ray_start_flags() -> None:
    for name, group in ray_groups():
        # KubeRay writes "true" as a bare --flag and anything else as --key=value.
        words = ["ray", "start"] + [f"--{k}" if v.lower() == "true" else f"--{k}={v}"
                                    for k, v in group["rayStartParams"].items()]
        opts = parse_invocation(words)[1]
        assert "head" not in opts and "address" not in opts, f"{name}: KubeRay sets --head and --address itself"
    assert raycluster()["spec"]["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", \
        "the head schedules; training there would compete with the GCS"


def test_raycluster_has_a_gpu_worker_group() -> None:
    gpu_groups = []
    for group in raycluster()["spec"]["workerGroupSpecs"]:
        resources = group["template"]["spec"]["containers"][0].get("resources", {})
        gpus = resources.get("limits", {}).get("nvidia.com/gpu")
        if gpus:
            gpu_groups.append(group["groupName"])
            assert group["rayStartParams"].get("num-gpus") == str(gpus), "Ray must offer the GPUs the pod holds"
            assert resources.get("requests", {}).get("nvidia.com/gpu", gpus) == gpus, \
                "Kubernetes requires GPU requests to equal limits"
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"


def test_one_image_on_every_ray_node_and_the_api() -> None:
    images = {c["image"] for _, g in ray_groups() for c in g["template"]["spec"]["containers"]}
    images.add(api_deployment()[1]["image"])
    images.add(doc(LAUNCHER)["docker"]["image"])
    assert len(images) == 1, f"Ray needs the same Python, Ray and Dvolver everywhere: {images}"
    name, _, tag = images.pop().rpartition(":")
    assert name.rsplit("/", 1)[-1] == "dvolver" and tag.startswith(pyproject()["project"]["version"])


def test_api_deployment_runs_the_service_against_the_kuberay_head() -> None:
    deployment, container = api_deployment()
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    # `args` alone keeps the image's tini entrypoint, which reaps the Ray daemons.
    assert "command" not in container and container["args"]
    found = invocations(container["args"])
    check_driver_has_a_node(found, "dvolver.yaml")
    serve = find(found, "dvolver", "serve")
    assert int(serve["runners"]) >= 1 and serve["ray_address"] == head_service_address()
    assert find(found, "ray", "start")["address"] == head_service_address()
    assert serve["host"] == "0.0.0.0" and serve.get("open_reads") is False
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports["http"]) == serve["port"]
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == health_route() and str(ports.get(get["port"], get["port"])) == serve["port"]
    (service,) = kube("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert all(str(ports.get(p["targetPort"], p["targetPort"])) == serve["port"] for p in service["spec"]["ports"])


def test_api_deployment_reads_the_store_url_from_a_secret() -> None:
    _, container = api_deployment()
    (env,) = [e for e in container["env"] if e["name"] == db_envvar()]
    assert env["valueFrom"]["secretKeyRef"], "the store URL holds a password"


def test_ray_token_is_the_same_secret_on_every_ray_pod_and_the_api() -> None:
    containers = [c for _, g in ray_groups() for c in g["template"]["spec"]["containers"]] + [api_deployment()[1]]
    settings = set()
    for container in containers:
        env = {e["name"]: e for e in container.get("env", [])}
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{container['name']} runs Ray without a token"
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        settings.add((ref["name"], ref["key"]))
    assert len(settings) == 1, f"Ray's nodes and drivers must share one token: {settings}"


def secret_refs(value: Any) -> list[dict[str, str]]:
    if isinstance(value, dict):
        return ([value["secretKeyRef"]] if "secretKeyRef" in value else []) + \
            [r for v in value.values() for r in secret_refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in secret_refs(v)]
    return []


def test_every_secret_the_manifests_read_is_made_in_the_readme() -> None:
    refs = {(ref["name"], ref["key"]) for ref in secret_refs(kube_objects())}
    assert refs
    for name, key in refs:
        assert f"kubectl create secret generic {name} --from-literal={key}=" in README.read_text(), \
            f"deploy/README.md never says how to make the Secret {name} (key {key})"


def test_kubernetes_data_volume_is_shared_at_the_data_root() -> None:
    (claim,) = kube("PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "many pods on many nodes mount it at once"
    pods = [g["template"]["spec"] for _, g in ray_groups()] + [api_deployment()[0]["spec"]["template"]["spec"]]
    mounts = set()
    for pod in pods:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        mounts |= {(claims[m["name"]], m["mountPath"]) for c in pod["containers"] for m in c.get("volumeMounts", [])
                   if m["name"] in claims}
    serve = find(invocations(api_deployment()[1]["args"]), "dvolver", "serve")
    assert mounts == {(claim["metadata"]["name"], root) for root in serve["data_root"]}


# ------------------------------------------------------------------------------ cluster launcher

def test_launcher_config_passes_rays_own_validation() -> None:
    import jsonschema
    import ray.autoscaler

    config = doc(LAUNCHER)
    for key in ("cluster_name", "provider", "docker", "head_node_type", "available_node_types",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in config, f"ray-cluster.yaml lacks {key}"
    assert config["head_node_type"] in config["available_node_types"]
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    try:  # what `ray up` runs before it touches a cloud; private, so only where it still exists
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:
        return
    validate_config(prepare_config(config))


def test_launcher_start_commands_use_real_ray_start_flags() -> None:
    config = doc(LAUNCHER)
    head = [opts for line in config["head_start_ray_commands"] for cli, path, opts in invocations(["sh", "-c", line])
            if path == ("start",)]
    assert len(head) == 1 and head[0].get("head")
    assert head[0]["autoscaling_config"] == "~/ray_bootstrap_config.yaml", "the autoscaler reads its config there"
    workers = [opts for line in config["worker_start_ray_commands"]
               for cli, path, opts in invocations(["sh", "-c", line]) if path == ("start",)]
    assert len(workers) == 1
    assert workers[0]["address"] == f"$RAY_HEAD_IP:{head[0].get('port', DEFAULT_GCS_PORT)}"
    assert any("/data" in option for option in config["docker"].get("run_options", [])), \
        "the shared data folder must reach every container at /data"
    # Ray's token: on for every container, and its default file copied to every node.
    assert "-e RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


# -------------------------------------------------------------------------------------- README

def readme_commands() -> list[list[str]]:
    """Commands in the README's shell blocks and inline code, continuation lines joined."""
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
    # Inline code with options is a command to copy; without (`ray up`) it is only a name.
    lines += [" ".join(span.split()) for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", text)
              if span.split()[0] in ("dvolver", "ray") and " --" in span]
    found = []
    for line in lines:
        words = [w for w in shlex.split(line, comments=True) if w not in ("...", "\\")]
        for i in range(len(words)):
            if is_invocation(words[i:]):
                found.append(words[i:])
            elif " " in words[i]:  # a quoted script: `ray exec CONFIG "dvolver ..."`
                found += [w for w in argv_commands(["sh", "-c", words[i]]) if is_invocation(w)]
    return found


def test_readme_commands_use_the_real_clis() -> None:
    commands = readme_commands()
    used = {(w[0], w[1]) for w in commands}
    assert {("dvolver", "serve"), ("dvolver", "runner"), ("dvolver", "token"), ("dvolver", "search"),
            ("ray", "up"), ("ray", "start")} <= used
    for words in commands:
        parse_invocation(words)


def test_readme_names_files_that_exist_and_the_pinned_ray() -> None:
    text = README.read_text()
    # Files and folders only: `deploy/dvolver-api` is a Kubernetes name; deploy/.env is made by the reader.
    for path in set(re.findall(r"(?<![\w/])deploy/[\w./-]*(?:\.\w+|/)", text)) - {"deploy/.env"}:
        assert (ROOT / path).exists(), f"deploy/README.md names {path}, which does not exist"
    for path in YAML_FILES + [DOCKERFILE]:
        assert str(path.relative_to(DEPLOY)) in text, f"deploy/README.md does not explain {path.name}"
    assert set(re.findall(r"ray\[default\]==([\d.]+)", text)) == {docker_args()["RAY_VERSION"]}
