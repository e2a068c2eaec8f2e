"""ops/docker/Dockerfile, parsed by BuildKit's own parser: two images, non-root, riskstream as
the entry point, only the package in the build context, models from a volume."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("cpu", "cuda")


def test_both_images_are_targets_and_cpu_is_the_default(compose: Any) -> None:
    dockerfile = compose.dockerfile
    assert set(IMAGES) <= set(dockerfile.stages)
    assert dockerfile.order[-1] == "cpu", "a plain `docker build` must make the CPU image"


@pytest.mark.parametrize("image", IMAGES)
def test_image_runs_riskstream_as_an_unprivileged_user(compose: Any, image: str) -> None:
    dockerfile = compose.dockerfile
    assert dockerfile.stage_value(image, "ENTRYPOINT") == ["riskstream"]
    user = dockerfile.stage_value(image, "USER")
    assert user is not None
    assert user[0].split(":")[0] not in ("root", "0"), f"{image} runs as {user}"
    # USER is the last word: nothing after it can run as root again.
    assert dockerfile.stages[image].instructions[-1].cmd == "USER"


@pytest.mark.parametrize("image", IMAGES)
def test_models_come_from_the_registry_volume(compose: Any, image: str) -> None:
    dockerfile = compose.dockerfile
    registry = dockerfile.env(image)["RISKSTREAM_MODEL__REGISTRY_DIR"]
    assert compose.volume_target("trainer", "model-registry") == registry
    for stage in dockerfile.lineage(image):
        for instruction in stage.instructions:
            if instruction.cmd in ("COPY", "ADD"):
                sources = " ".join(instruction.value[:-1])
                assert not re.search(r"registry|\.safetensors|\.pt\b|\.bin\b", sources), (
                    f"{image} copies a model into the image: {instruction.original}"
                )


def test_build_context_holds_exactly_what_the_dockerfile_copies(compose: Any) -> None:
    """.dockerignore is an allowlist (`*` first): every COPY source from the context is
    re-included, exists, and nothing else (no ops/compose.env, no .riskstream/) goes in."""
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for stage in compose.dockerfile.stages.values():
        for instruction in stage.instructions:
            if instruction.cmd == "COPY" and not any(
                flag.startswith("--from") for flag in instruction.flags
            ):
                copied |= {source.rstrip("/") for source in instruction.value[:-1]}
    assert copied == allowed
    for source in copied:
        assert (REPO_ROOT / source).exists(), f"the Dockerfile copies missing {source}"
    assert "ops/compose.env" not in allowed


def test_the_torch_pin_the_cpu_image_reads_is_unique() -> None:
    """deps-cpu installs `$(grep -E '^torch==' ops/constraints.txt)` from the CPU index; it
    must find exactly the torch pyproject.toml requires."""
    constraints = (REPO_ROOT / "ops" / "constraints.txt").read_text().splitlines()
    pins = [line for line in constraints if re.match(r"^torch==", line)]
    assert len(pins) == 1
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pins[0] in pyproject["project"]["dependencies"]


@pytest.mark.parametrize("image", IMAGES)
def test_image_defaults_are_settings(compose: Any, settings_names: set[str], image: str) -> None:
    env = compose.dockerfile.env(image)
    riskstream = {k for k in env if k.startswith("RISKSTREAM_")}
    assert riskstream
    assert riskstream <= settings_names
    assert env["RISKSTREAM_MODEL__DEVICE"] == image
    # The backbone ships in a pip package; nothing may reach for the Hugging Face hub.
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["TRANSFORMERS_OFFLINE"] == "1"
