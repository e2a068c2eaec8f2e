"""What the ops tests read: the compose file as compose would see it, the riskstream CLI tree,
the settings object's variable names, and the image's Dockerfile.

There is no Docker engine on development and CI machines, so nothing here runs a container.
The compose file is checked the way compose itself loads one (compose-go: interpolate, validate
against the compose-spec JSON Schema, then check cross-references); everything riskstream-
specific is checked against the code it must agree with. Helpers are exposed as fixtures (the
suite runs in importlib mode, where test modules cannot import each other).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import typer
import typer.core
import yaml
from pydantic import BaseModel

from stream.cli import app
from stream.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "ops" / "docker" / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / "ops" / "compose.env.example"
# The file ops create from the example; the tests read the example in its place.
ENV_FILE = "ops/compose.env"
OPERATIONS_DOC = REPO_ROOT / "docs" / "operations.md"


# -- compose interpolation (the subset of compose's shell-like syntax) ------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?|"
    r"(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is missing, or syntax compose would reject."""


def interpolate_string(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-x}``, ``${VAR-x}``, ``${VAR:?m}``,
    ``${VAR?m}``, ``${VAR:+x}`` and ``${VAR+x}`` (defaults may nest), as compose does."""
    out: list[str] = []
    pos = 0
    while (match := _VARIABLE.search(text, pos)) is not None:
        out.append(text[pos : match.start()])
        if match["escaped"]:
            out.append("$")
            pos = match.end()
            continue
        if match["plain"]:
            out.append(env.get(match["plain"], ""))
            pos = match.end()
            continue
        name, op = match["braced"], match["op"]
        if op is None:
            if text[match.end() : match.end() + 1] != "}":
                raise InterpolationError(f"invalid interpolation at {text[match.start() :]!r}")
            out.append(env.get(name, ""))
            pos = match.end() + 1
            continue
        word, pos = _braced_word(text, match.end())
        value = env.get(name)
        unset_or_empty = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            out.append(interpolate_string(word, env) if unset_or_empty else str(value))
        elif op.endswith("?"):
            if unset_or_empty:
                raise InterpolationError(f"required variable {name} is missing: {word}")
            out.append(str(value))
        else:  # "+": the alternative when set
            out.append("" if unset_or_empty else interpolate_string(word, env))
    out.append(text[pos:])
    return "".join(out)


def _braced_word(text: str, start: int) -> tuple[str, int]:
    """The text up to the ``}`` closing a ``${...`` (nested ``${}`` allowed); its end."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i], i + 1
        i += 1
    raise InterpolationError(f"unclosed ${{ in {text!r}")


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not keys) of a parsed compose document."""
    if isinstance(node, str):
        return interpolate_string(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def variables_used(node: Any) -> set[str]:
    """Names of the compose-level variables a document reads (``$$`` escapes excluded)."""
    if isinstance(node, str):
        names = set()
        for match in _VARIABLE.finditer(node):
            if match["braced"] or match["plain"]:
                names.add(match["braced"] or match["plain"])
        return names
    if isinstance(node, list):
        return set().union(*(variables_used(item) for item in node)) if node else set()
    if isinstance(node, dict):
        return set().union(*(variables_used(v) for v in node.values())) if node else set()
    return set()


# -- env files -------------------------------------------------------------------------------


def read_env_file(path: Path, *, include_commented: bool = False) -> dict[str, str]:
    """KEY=VALUE lines of an env file; with ``include_commented``, also ``# KEY=VALUE`` lines
    (the example documents optional settings as commented assignments)."""
    pattern = re.compile(
        r"^\s*(?:#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$"
        if include_commented
        else r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$"
    )
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not include_commented and line.lstrip().startswith("#"):
            continue
        match = pattern.match(line)
        if match:
            values[match[1]] = match[2].strip()
    return values


# -- the settings object ----------------------------------------------------------------------


def settings_variables(model: type[BaseModel] = Settings, prefix: str = "RISKSTREAM_") -> set[str]:
    """Every leaf environment variable the settings object reads (``__`` between sections)."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        key = f"{prefix}{name.upper()}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_variables(annotation, f"{key}__")
        else:
            names.add(key)
    return names


# -- the riskstream CLI -----------------------------------------------------------------------


def check_riskstream_args(args: list[str]) -> str:
    """Resolve ``riskstream ARGS`` against the real command tree and parse its options as the
    command would (types, ranges, required arguments); return the command path.

    Raises AssertionError for an unknown command or option or a bad value. Nothing is
    executed."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(args)
    while isinstance(command, typer.core.TyperGroup):
        if not rest:
            raise AssertionError(f"`riskstream {' '.join(path)}` needs a sub-command")
        token = rest.pop(0)
        if token == "--help":
            return " ".join(path)
        sub = command.commands.get(token)
        if sub is None:
            raise AssertionError(
                f"`riskstream {' '.join([*path, token])}` is not a command "
                f"(known under `riskstream {' '.join(path)}`: {sorted(command.commands)})"
            )
        path.append(token)
        command = sub
    if "--help" in rest:
        return " ".join(path)
    try:
        command.make_context(" ".join(path), rest)
    except typer.TyperException as error:
        raise AssertionError(f"`riskstream {' '.join(args)}`: {error}") from error
    return " ".join(path)


# -- the compose model ------------------------------------------------------------------------


@dataclass
class Compose:
    """docker-compose.yml as compose loads it with no variables set (every default applies)."""

    raw: dict[str, Any]
    doc: dict[str, Any]
    dockerfile: Dockerfile

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return dict(self.doc["services"])

    def active(self, profiles: Iterable[str]) -> set[str]:
        """Services `docker compose --profile P...` runs: no profiles, or a listed one."""
        enabled = set(profiles)
        return {
            name
            for name, service in self.services.items()
            if not service.get("profiles") or enabled & set(service["profiles"])
        }

    def all_profiles(self) -> set[str]:
        return {p for service in self.services.values() for p in service.get("profiles", [])}

    def riskstream_services(self) -> dict[str, dict[str, Any]]:
        """Services built from ops/docker/Dockerfile, whose entry point is `riskstream`."""
        return {
            name: service
            for name, service in self.services.items()
            if isinstance(service.get("build"), dict)
            and service["build"].get("dockerfile") == DOCKERFILE.relative_to(REPO_ROOT).as_posix()
        }

    def riskstream_args(self, name: str) -> list[str]:
        service = self.services[name]
        assert "entrypoint" not in service, f"{name} replaces the image's entry point"
        command = service.get("command", self.dockerfile.stage_value(self.target(name), "CMD"))
        assert isinstance(command, list), f"{name}: command must be a list (exec form)"
        return [str(arg) for arg in command]

    def target(self, name: str) -> str:
        return str(self.services[name]["build"]["target"])

    def env_files(self, name: str) -> list[Path]:
        """The service's env files in order, the example standing in for ops/compose.env."""
        entries = self.services[name].get("env_file", [])
        entries = [entries] if isinstance(entries, str) else entries
        paths = []
        for entry in entries:
            relative = entry if isinstance(entry, str) else entry["path"]
            paths.append(ENV_EXAMPLE if relative == ENV_FILE else REPO_ROOT / relative)
        return paths

    def environment(self, name: str) -> dict[str, str]:
        """`environment:` of a service as a mapping (compose accepts a list of KEY=VALUE)."""
        env = self.services[name].get("environment", {})
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        return {key: "" if value is None else str(value) for key, value in env.items()}

    def effective_env(self, name: str) -> dict[str, str]:
        """What the container's process sees: image ENV, then env files in order, then
        `environment:` (compose's precedence)."""
        env: dict[str, str] = {}
        if name in self.riskstream_services():
            env.update(self.dockerfile.env(self.target(name)))
        for path in self.env_files(name):
            env.update(read_env_file(path))
        env.update(self.environment(name))
        return env

    def settings_for(self, name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
        """The Settings object a riskstream service builds from its effective environment."""
        return settings_from_env(self.effective_env(name), monkeypatch)

    def volume_target(self, service: str, source: str) -> str:
        for volume in self.services[service].get("volumes", []):
            parts = volume.split(":")
            if parts[0] == source:
                return parts[1]
        raise AssertionError(f"{service} does not mount {source}")


def settings_from_env(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Build Settings from exactly ``env`` (the test process's own RISKSTREAM_* cleared)."""
    for key in list(os.environ):
        if key.startswith("RISKSTREAM_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("RISKSTREAM_"):
            monkeypatch.setenv(key, value)
    return Settings()


# -- the Dockerfile ---------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    parent: str  # the FROM image or stage name
    instructions: list[dockerfile.Command] = field(default_factory=list)


@dataclass
class Dockerfile:
    """ops/docker/Dockerfile parsed by BuildKit's own parser (the `dockerfile` package)."""

    stages: dict[str, Stage]
    order: list[str]

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        stages: dict[str, Stage] = {}
        order: list[str] = []
        current: Stage | None = None
        for command in dockerfile.parse_file(str(path)):
            if command.cmd == "FROM":
                values = list(command.value)
                name = values[2] if len(values) == 3 and values[1].upper() == "AS" else values[0]
                current = Stage(name=name, parent=values[0])
                stages[name] = current
                order.append(name)
            elif current is not None:
                current.instructions.append(command)
        return cls(stages, order)

    def lineage(self, target: str) -> list[Stage]:
        """The stage and the stages it is built FROM, base first."""
        chain = []
        name: str | None = target
        while name in self.stages:
            stage = self.stages[name]
            chain.append(stage)
            name = stage.parent
        return list(reversed(chain))

    def instructions(self, target: str, cmd: str) -> Iterator[dockerfile.Command]:
        for stage in self.lineage(target):
            yield from (i for i in stage.instructions if i.cmd == cmd)

    def env(self, target: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction in self.instructions(target, "ENV"):
            pairs = list(instruction.value)
            env.update(dict(zip(pairs[::2], pairs[1::2], strict=True)))
        return env

    def stage_value(self, target: str, cmd: str) -> list[str] | None:
        """The effective ENTRYPOINT/CMD/USER of a target (the last one in its lineage)."""
        found = list(self.instructions(target, cmd))
        return list(found[-1].value) if found else None


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def compose_raw() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="session")
def image_dockerfile() -> Dockerfile:
    return Dockerfile.parse(DOCKERFILE)


@pytest.fixture(scope="session")
def compose(compose_raw: dict[str, Any], image_dockerfile: Dockerfile) -> Compose:
    return Compose(raw=compose_raw, doc=interpolate(compose_raw, {}), dockerfile=image_dockerfile)


@pytest.fixture(scope="session")
def settings_names() -> set[str]:
    return settings_variables()


@pytest.fixture(scope="session")
def riskstream_args() -> Callable[[list[str]], str]:
    """`check_riskstream_args`, as a fixture."""
    return check_riskstream_args


@pytest.fixture(scope="session")
def interpolate_text() -> Callable[[str, Mapping[str, str]], str]:
    return interpolate_string


@pytest.fixture(scope="session")
def compose_variables(compose_raw: dict[str, Any]) -> set[str]:
    return variables_used(compose_raw)


@pytest.fixture(scope="session")
def env_file_reader() -> Callable[..., dict[str, str]]:
    return read_env_file


@pytest.fixture(scope="session")
def settings_env() -> Callable[[Mapping[str, str], pytest.MonkeyPatch], Settings]:
    return settings_from_env
