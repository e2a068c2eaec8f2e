"""docs/operations.md: the commands it tells ops to type are real.

Every `docker compose` line in its code blocks names services the compose file defines, and a
`docker compose run ... SERVICE ARGS` on a riskstream service passes ARGS that the riskstream
CLI accepts; every RISKSTREAM_* name it mentions is a setting.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MANUAL = REPO_ROOT / "docs" / "operations.md"

# docker compose options that take a value (global ones, and those of the sub-commands used).
VALUED_OPTIONS = {
    "-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--project-directory",
    "-e", "--env", "-v", "--volume", "--entrypoint", "-u", "--user", "-w", "--workdir",
    "--name", "-l", "--label", "--scale", "-t", "--timeout", "--tail", "--pull", "-n",
}  # fmt: skip
SERVICE_SUBCOMMANDS = {
    "up", "run", "logs", "restart", "stop", "start", "build", "pull", "ps", "exec", "create",
    "rm", "kill", "pause", "unpause", "top", "images", "events", "port", "cp", "config",
    "down", "watch", "attach", "stats", "ls", "version", "wait",
}  # fmt: skip


def _compose_commands() -> list[list[str]]:
    """`docker compose ...` commands inside fenced code blocks, continuation lines joined."""
    commands: list[list[str]] = []
    in_block = False
    pending = ""
    for line in MANUAL.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        text = re.sub(r"^\$\s+", "", text.split(" #", 1)[0])
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", text):
            if part.startswith("docker compose "):
                commands.append(shlex.split(part)[2:])
    return commands


COMMANDS = _compose_commands()


def _parse(tokens: list[str]) -> tuple[str, list[str], dict[str, list[str]], list[str]]:
    """(sub-command, positionals, options, everything after the service for `run`)."""
    options: dict[str, list[str]] = {}
    positionals: list[str] = []
    subcommand = ""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("-"):
            name, _, inline = token.partition("=")
            if name in VALUED_OPTIONS and not inline:
                i += 1
                inline = tokens[i]
            options.setdefault(name, []).append(inline)
        elif not subcommand:
            subcommand = token
        else:
            positionals.append(token)
            if subcommand == "run":  # SERVICE, then the container's command
                return subcommand, positionals, options, tokens[i + 1 :]
        i += 1
    return subcommand, positionals, options, []


def test_the_manual_has_commands_to_check() -> None:
    subcommands = {_parse(tokens)[0] for tokens in COMMANDS}
    assert {"up", "run"} <= subcommands
    assert any("--scale" in tokens[0] or "--scale" in " ".join(tokens) for tokens in COMMANDS)


@pytest.mark.parametrize("tokens", COMMANDS, ids=[" ".join(t)[:60] for t in COMMANDS])
def test_compose_command_in_the_manual(
    compose: Any, riskstream_args: Callable[[list[str]], str], tokens: list[str]
) -> None:
    subcommand, positionals, options, container_args = _parse(tokens)
    assert subcommand in SERVICE_SUBCOMMANDS, f"unknown compose sub-command {subcommand}"
    known_profiles = compose.all_profiles()
    for profile in options.get("--profile", []):
        assert profile in known_profiles, f"no profile {profile}"
    for scale in options.get("--scale", []):
        service, _, replicas = scale.partition("=")
        assert service in compose.services, scale
        assert replicas.isdigit(), scale
    if subcommand in ("cp", "config", "ls", "version", "events"):
        return
    services = positionals if subcommand != "exec" else positionals[:1]
    for service in services:
        assert service in compose.services, f"`docker compose {' '.join(tokens)}`: {service}?"
    if subcommand == "run" and "--entrypoint" not in options:
        assert positionals[0] in compose.riskstream_services()
        riskstream_args(container_args)


def test_settings_named_in_the_manual_exist(settings_names: set[str]) -> None:
    mentioned = set(re.findall(r"\bRISKSTREAM_[A-Z0-9_]*[A-Z0-9]\b", MANUAL.read_text()))
    assert len(mentioned) > 5
    assert not mentioned - settings_names, sorted(mentioned - settings_names)
