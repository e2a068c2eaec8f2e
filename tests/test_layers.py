"""The layer contract of ``make lint``: stream > models > schemas, checked by import-linter.

Real runs of ``lint-imports`` with the project's own ``[tool.importlinter]`` config: it passes
on this tree, and fails, naming the contract and the offending import, on a copy of the three
packages with one import that runs the wrong way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("stream", "models", "schemas")
CONTRACT = "stream > models > schemas"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run in ``tree`` with ``tree/pyproject.toml`` (it finds the packages
    from its working directory)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "pyproject.toml"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def copy_tree(dest: Path) -> Path:
    """The three packages' Python sources and the project's pyproject.toml under ``dest``."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            dest / package,
            ignore=lambda folder, names: (
                [n for n in names if not n.endswith(".py") and not Path(folder, n).is_dir()]
                + ["__pycache__"]
            ),
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


@pytest.fixture(scope="module", autouse=True)
def _tool_installed() -> None:
    assert LINT_IMPORTS.is_file(), f"{LINT_IMPORTS} missing: install the dev extras"


def test_the_project_keeps_its_layers() -> None:
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{CONTRACT} KEPT" in run.stdout


def test_a_copy_of_the_tree_keeps_them_too(tmp_path: Path) -> None:
    # the check below means something only if the copy itself is clean
    run = lint_imports(copy_tree(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("module", "wrong_import", "offender"),
    [
        ("models/errors.py", "import stream.settings", "stream.settings"),
        ("schemas/features.py", "from models.settings import ModelSettings", "models.settings"),
        ("schemas/narrative/builder.py", "import stream.context.store", "stream.context.store"),
    ],
)
def test_an_import_up_the_layers_breaks_the_contract(
    tmp_path: Path, module: str, wrong_import: str, offender: str
) -> None:
    tree = copy_tree(tmp_path)
    path = tree / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{wrong_import}  # noqa\n")
    run = lint_imports(tree)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{CONTRACT} BROKEN" in run.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {offender}" in run.stdout, run.stdout
