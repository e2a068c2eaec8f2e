"""docker-compose.yml, checked without a Docker engine.

1. It is a valid compose file: compose's own loading steps - interpolation, the compose-spec
   JSON Schema (tests/ops/data, pinned copy), the cross-reference checks compose-go makes
   (undefined services, volumes, profiles, healthcheck forms, durations). Where a compose v2
   CLI exists (not on CI machines), ops/check-compose-cli.sh runs `docker compose config` too;
   it is a script rather than a test that would always skip here.
2. It runs riskstream: every service's command is a real `riskstream` command with real options;
   every RISKSTREAM_* variable it, its env files and the image set is a field of the settings
   object, and each service's environment builds a valid Settings.
3. It is operable: restart policies, healthchecks behind every `service_healthy`, one-shots
   behind every `service_completed_successfully`, host ports on 127.0.0.1 only, nothing that
   breaks `--scale scorer=N`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import SecretStr

from stream.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA = REPO_ROOT / "tests" / "ops" / "data" / "compose-spec.json"
ENV_EXAMPLE = REPO_ROOT / "ops" / "compose.env.example"

# Go's time.ParseDuration syntax, which compose uses for every duration field.
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
SCALED_SERVICES = ("scorer", "scorer-gpu")
RISKSTREAM_SERVICES = (
    "topic-init", "scorer", "scorer-gpu", "trainer", "demo-data", "model-init", "simulator",
    "analyst", "cli", "desk-init", "desk",
)  # fmt: skip


# -- 1. a valid compose file ------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(compose: Any) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose.doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def test_the_schema_check_rejects_what_compose_rejects(compose: Any) -> None:
    """The pinned schema is strict: an unknown key or a wrong type fails (or the test above
    could pass on anything)."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    typo = json.loads(json.dumps(compose.doc))
    typo["services"]["scorer"]["restart_policy"] = "always"
    assert not validator.is_valid(typo)
    wrong_type = json.loads(json.dumps(compose.doc))
    wrong_type["services"]["scorer"]["depends_on"]["kafka"]["condition"] = "service_ready"
    assert not validator.is_valid(wrong_type)


def test_every_variable_has_a_default_or_is_documented(
    compose_raw: dict[str, Any], compose_variables: set[str]
) -> None:
    """`docker compose up` must work with no variable set; each knob is documented in the
    file's header and in docs/operations.md."""
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    without_default = re.findall(r"(?<!\$)\$\{(\w+)(?!\w|:-)[^}]*\}", text)
    assert not without_default, f"no default for {sorted(set(without_default))}"
    header = text.split("\nname:", 1)[0]
    manual = (REPO_ROOT / "docs" / "operations.md").read_text()
    for name in sorted(compose_variables):
        assert name.startswith("STACK_"), f"{name}: compose-level knobs are named STACK_*"
        assert name in header, f"{name} is not listed in docker-compose.yml's header"
        assert name in manual, f"{name} is not documented in docs/operations.md"


@pytest.mark.parametrize("profiles", [(), ("demo",), ("gpu",), ("tools",), ("*",)])
def test_dependencies_resolve_in_every_profile(compose: Any, profiles: tuple[str, ...]) -> None:
    """compose refuses to start a service that depends on a service it does not run, unless
    the dependency says `required: false`."""
    enabled = compose.all_profiles() if profiles == ("*",) else set(profiles)
    active = compose.active(enabled)
    for name in sorted(active):
        for target, spec in compose.services[name].get("depends_on", {}).items():
            assert target in compose.services, f"{name} depends on undefined service {target}"
            if target not in active:
                assert spec.get("required") is False, (
                    f"{name} depends on {target}, which is off in profiles {sorted(enabled)}; "
                    "mark the dependency required: false"
                )


def test_references_exist(compose: Any) -> None:
    declared_volumes = set(compose.doc.get("volumes", {}))
    dockerfile_stages = set(compose.dockerfile.stages)
    for name, service in compose.services.items():
        assert service.get("image") or service.get("build"), f"{name}: no image and no build"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO_ROOT / source).exists(), f"{name} bind-mounts missing {source}"
            else:
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"
        for path in compose.env_files(name):
            assert path.is_file(), f"{name}: env file {path} is missing"
        build = service.get("build")
        if isinstance(build, dict):
            assert (REPO_ROOT / build["context"] / build["dockerfile"]).is_file()
            assert build["target"] in dockerfile_stages, f"{name}: no stage {build['target']}"
        healthcheck = service.get("healthcheck")
        if healthcheck:
            assert healthcheck["test"][0] in ("CMD", "CMD-SHELL", "NONE")
            for key in ("interval", "timeout", "start_period"):
                assert GO_DURATION.match(healthcheck.get(key, "0s")), f"{name} {key}"
        assert GO_DURATION.match(service.get("stop_grace_period", "10s")), name


def test_services_sharing_an_image_build_it_the_same_way(compose: Any) -> None:
    builds: dict[str, Any] = {}
    for name, service in compose.services.items():
        if "build" in service:
            first = builds.setdefault(service["image"], service["build"])
            assert first == service["build"], f"{name} builds {service['image']} differently"


# -- 2. it runs riskstream --------------------------------------------------------------------


def test_riskstream_services_are_found(compose: Any) -> None:
    """The checks below cover every service running the riskstream image (a service that
    stopped matching would silently drop out of them)."""
    assert set(compose.riskstream_services()) == set(RISKSTREAM_SERVICES)


@pytest.mark.parametrize("service", RISKSTREAM_SERVICES)
def test_service_command_is_a_riskstream_command(
    compose: Any, riskstream_args: Callable[[list[str]], str], service: str
) -> None:
    assert compose.dockerfile.stage_value(compose.target(service), "ENTRYPOINT") == ["riskstream"]
    riskstream_args(compose.riskstream_args(service))


def test_the_command_check_rejects_what_the_cli_rejects(
    riskstream_args: Callable[[list[str]], str],
) -> None:
    assert riskstream_args(["topics", "create", "--partitions", "3"]) == "topics create"
    for bad in (
        ["topics", "crate"],
        ["topics", "create", "--partition", "3"],
        ["topics", "create", "--partitions", "0"],  # min=1
        ["topics", "create", "--partitions", "many"],
        ["model", "promote"],  # VERSION is required
        ["run"],
    ):
        with pytest.raises(AssertionError):
            riskstream_args(bad)


def test_settings_names_walk_the_nested_model(settings_names: set[str]) -> None:
    assert {"RISKSTREAM_HOME", "RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS"} <= settings_names
    assert "RISKSTREAM_SCORER__METRICS_PORT" in settings_names
    assert "RISKSTREAM_KAFKA" not in settings_names  # a section, not a field
    assert len(settings_names) > 50


def test_every_riskstream_variable_is_a_setting(
    compose: Any, settings_names: set[str], env_file_reader: Callable[..., dict[str, str]]
) -> None:
    """pydantic-settings ignores an unknown top-level RISKSTREAM_* variable, so a typo would
    silently leave the default in force: every name set anywhere in the stack is checked."""
    sources: dict[str, set[str]] = {}
    for name in compose.services:
        sources[f"docker-compose.yml services.{name}.environment"] = set(compose.environment(name))
    for target in ("cpu", "cuda"):
        sources[f"Dockerfile ENV ({target})"] = set(compose.dockerfile.env(target))
    sources["ops/stack.env"] = set(env_file_reader(REPO_ROOT / "ops" / "stack.env"))
    sources["ops/compose.env.example (commented lines too)"] = set(
        env_file_reader(ENV_EXAMPLE, include_commented=True)
    )
    checked = 0
    for where, names in sources.items():
        for name in names:
            if name.startswith("RISKSTREAM"):
                checked += 1
                assert name in settings_names, f"{where}: {name} is not a riskstream setting"
    assert checked >= 20


@pytest.mark.parametrize("service", RISKSTREAM_SERVICES)
def test_service_environment_builds_valid_settings(
    compose: Any, monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    """Types, choices and cross-field rules hold for what each container will read, and it
    reaches the stack's own Kafka and Redis (ports their services listen on)."""
    settings: Settings = compose.settings_for(service, monkeypatch)
    kafka_listeners = compose.environment("kafka")["KAFKA_LISTENERS"]
    plaintext_port = re.search(r"PLAINTEXT://[^:]*:(\d+)", kafka_listeners)
    assert plaintext_port is not None
    assert settings.kafka.bootstrap_servers == f"kafka:{plaintext_port[1]}"
    assert settings.redis.url.startswith("redis://redis:6379/")
    assert settings.redis.password is not None, "the bundled Redis requires a password"
    # The ones that use models (the desk only reads alerts and writes labels).
    if service not in ("topic-init", "simulator", "demo-data", "analyst", "desk-init", "desk"):
        registry_mount = compose.volume_target(service, "model-registry")
        assert str(settings.model.registry_dir) == registry_mount
    if compose.target(service) == "cuda":
        assert settings.model.device == "cuda"


def test_the_documented_external_cluster_settings_are_valid(
    env_file_reader: Callable[..., dict[str, str]],
    settings_env: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Uncommenting the example's SASL_SSL Kafka and TLS Redis blocks gives a configuration
    the settings object accepts (its SASL rule included) and renders for librdkafka."""
    env = env_file_reader(ENV_EXAMPLE, include_commented=True)
    settings = settings_env(env, monkeypatch)
    assert settings.kafka.security_protocol == "SASL_SSL"
    config = settings.kafka.client_config()
    assert config["sasl.mechanism"] == env["RISKSTREAM_KAFKA__SASL_MECHANISM"]
    assert config["ssl.ca.location"] == env["RISKSTREAM_KAFKA__SSL_CA_LOCATION"]
    assert settings.redis.uses_tls


def test_the_example_env_file_holds_placeholders_only(
    env_file_reader: Callable[..., dict[str, str]],
) -> None:
    secret_fields = set()
    for section_name, section in Settings.model_fields.items():
        annotation = section.annotation
        for field_name, info in getattr(annotation, "model_fields", {}).items():
            if SecretStr in getattr(info.annotation, "__args__", (info.annotation,)):
                secret_fields.add(f"RISKSTREAM_{section_name.upper()}__{field_name.upper()}")
    assert "RISKSTREAM_REDIS__PASSWORD" in secret_fields
    env = env_file_reader(ENV_EXAMPLE, include_commented=True)
    secrets = {k: v for k, v in env.items() if k in secret_fields or "PASSWORD" in k}
    assert {"RISKSTREAM_REDIS__PASSWORD", "RISKSTREAM_KAFKA__SASL_PASSWORD"} <= set(secrets)
    assert "GF_SECURITY_ADMIN_PASSWORD" in secrets
    for key, value in secrets.items():
        assert value.startswith("CHANGE-ME"), f"{key} in the example must be a placeholder"


def test_the_real_env_file_is_never_committed() -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "check-ignore", "--quiet", "--no-index", "ops/compose.env"],
        cwd=REPO_ROOT,
        check=False,
    )
    assert ignored.returncode == 0, "ops/compose.env must be listed in .gitignore"


# -- 3. operable ------------------------------------------------------------------------------


def test_dependency_conditions_can_be_met(compose: Any) -> None:
    for name, service in compose.services.items():
        for target, spec in service.get("depends_on", {}).items():
            dependency = compose.services[target]
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in dependency, f"{name} waits for {target}'s health"
            if spec["condition"] == "service_completed_successfully":
                assert dependency.get("restart") == "no", (
                    f"{name} waits for {target} to complete; it must be a one-shot"
                )


def test_restart_policies(compose: Any) -> None:
    one_shots = {"topic-init", "demo-data", "model-init", "simulator", "cli", "desk-init"}
    for name, service in compose.services.items():
        expected = "no" if name in one_shots else "unless-stopped"
        assert service.get("restart") == expected, name
        if expected == "unless-stopped":
            assert "healthcheck" in service, f"{name} runs for good but has no healthcheck"


def test_host_ports_bind_loopback_only(compose: Any) -> None:
    for name, service in compose.services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: write ports as HOST_IP:HOST:CONTAINER"
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"


@pytest.mark.parametrize("service", SCALED_SERVICES)
def test_scaled_services_can_run_several_replicas(compose: Any, service: str) -> None:
    spec = compose.services[service]
    assert "ports" not in spec, "a fixed host port fails on the second replica"
    assert "container_name" not in spec
    assert "hostname" not in spec


def test_stores_persist_and_redis_refuses_to_evict(compose: Any) -> None:
    kafka = compose.environment("kafka")
    assert compose.volume_target("kafka", "kafka-data") == kafka["KAFKA_LOG_DIRS"]
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert compose.volume_target("redis", "redis-data") == "/data"
    redis_command = " ".join(compose.services["redis"]["command"])
    for flag in ("--appendonly yes", "--maxmemory-policy noeviction", "--requirepass"):
        assert flag in redis_command
    postgres = compose.environment("postgres")
    data = compose.volume_target("postgres", "postgres-data")
    assert postgres["PGDATA"].startswith(data + "/")


def test_the_desk_migrates_first_and_uses_the_one_database_secret(
    compose: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = compose.services["desk"]
    assert desk["depends_on"]["desk-init"]["condition"] == "service_completed_successfully"
    assert compose.services["desk-init"]["command"] == ["desk", "db", "upgrade"]
    assert desk["ports"] == ["127.0.0.1:8088:8088"]  # interpolated: loopback only
    settings: Settings = compose.settings_for("desk", monkeypatch)
    assert settings.desk.database_url.endswith("@postgres:5432/riskstream")
    postgres = compose.environment("postgres")
    command = " ".join(compose.services["postgres"]["command"])
    # The database's password is the very variable the desk reads.
    assert 'POSTGRES_PASSWORD="${RISKSTREAM_DESK__DATABASE_PASSWORD}"' in command
    assert postgres["POSTGRES_USER"] in settings.desk.database_url


def test_workers_get_time_to_finish_their_batch(
    compose: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = compose.settings_for("scorer", monkeypatch)
    grace = compose.services["scorer"]["stop_grace_period"]
    assert grace.endswith("s")
    # The scorer exits by itself at most shutdown_timeout_s + 10 s after SIGTERM.
    assert float(grace[:-1]) > settings.scorer.shutdown_timeout_s + 10


def test_gpu_scorer_reserves_a_gpu(compose: Any) -> None:
    devices = compose.services["scorer-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert compose.services["scorer-gpu"]["profiles"] == ["gpu"]
    assert compose.target("scorer-gpu") == "cuda"
    assert compose.target("scorer") == "cpu"


def test_the_demo_needs_its_profile(compose: Any) -> None:
    for name in ("simulator", "demo-data", "model-init", "analyst"):
        assert compose.services[name]["profiles"] == ["demo"]
    assert "simulator" not in compose.active(())
