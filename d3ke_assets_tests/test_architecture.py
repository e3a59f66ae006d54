"""The layer order in pyproject.toml ([tool.importlinter]) holds for the code, and the check can fail.

`lint-imports` runs in a subprocess from the repository root, so it analyses this checkout's
`d3ke_assets` (import-linter puts the working directory first on the path).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"


def _config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]


def _contract(contract_id: str) -> dict:
    return next(c for c in _config()["contracts"] if c["id"] == contract_id)


def _lint_imports_program() -> str:
    # the console script beside this interpreter: the venv's, not one that happens to be on PATH
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.is_file() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports not found: pip install -e '.[test]' (import-linter is in the test extra)")
    return found


def _lint(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_lint_imports_program(), str(config), "--no-cache", "--no-logo"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _config_with(tmp_path: Path, contract: str) -> Path:
    """A config file of one contract, with the project's session options."""
    path = tmp_path / "contracts.toml"
    path.write_text('[tool.importlinter]\nroot_package = "d3ke_assets"\ninclude_external_packages = true\n\n'
                    '[[tool.importlinter.contracts]]\n' + contract)
    return path


def test_the_project_contracts_are_kept():
    proc = _lint(PYPROJECT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout, proc.stdout


def test_layers_contract_names_every_module_and_ignores_nothing():
    layers = _contract("layers")
    assert layers["type"] == "layers"
    assert layers["containers"] == ["d3ke_assets"] and layers["exhaustive"] is True
    assert "ignore_imports" not in layers and "exhaustive_ignores" not in layers
    # the order README's layout describes, top to bottom: reordering the contract is a decision, not a slip
    named = [m.strip(" ()") for layer in layers["layers"] for m in layer.replace(":", "|").split("|")]
    order = ["cli", "benchmarks", "definitions", "defs", "evaluation", "learning", "frames", "sources", "biomech",
             "media", "settings", "versioning", "storage", "errors"]
    assert [m for m in named if m in order] == order


def test_no_installed_dagster_module_reaches_the_domain(tmp_path):
    # import-linter has no "dagster_*" wildcard (a wildcard replaces a whole module name), so the
    # project contract lists names; this runs it again with every dagster* module installed here
    installed = {name for name in importlib.metadata.packages_distributions()
                 if name == "dagster" or name.startswith("dagster_")}
    assert "dagster" in installed
    contract = _contract("domain-without-dagster")
    forbidden = sorted(installed | set(contract["forbidden_modules"]))
    config = _config_with(tmp_path, f'name = "domain without any dagster module"\ntype = "forbidden"\n'
                                    f'source_modules = {_toml_list(contract["source_modules"])}\n'
                                    f'forbidden_modules = {_toml_list(forbidden)}\n')
    proc = _lint(config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout, proc.stdout


def test_a_layer_order_the_code_breaks_is_reported(tmp_path):
    # sources.raw and sources.synthetic import media (cameras, video writing): media above sources is false
    config = _config_with(tmp_path, 'name = "media above sources"\ntype = "layers"\n'
                                    'layers = ["d3ke_assets.media", "d3ke_assets.sources"]\n')
    proc = _lint(config)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "0 kept, 1 broken" in proc.stdout
    assert "d3ke_assets.sources.synthetic -> d3ke_assets.media.camera" in proc.stdout, proc.stdout


def test_a_module_left_out_of_the_layers_is_reported(tmp_path):
    layers = [("biomech" if layer == "biomech | media" else layer) for layer in _contract("layers")["layers"]]
    assert "biomech" in layers
    config = _config_with(tmp_path, 'name = "without media"\ntype = "layers"\ncontainers = ["d3ke_assets"]\n'
                                    f'exhaustive = true\nlayers = {_toml_list(layers)}\n')
    proc = _lint(config)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not listed as layers:\n\n- d3ke_assets.media\n" in proc.stdout, proc.stdout
    assert "is not allowed to import" not in proc.stdout  # broken by the omission alone


def test_a_dagster_import_is_reported(tmp_path):
    # defs is the Dagster wiring: the same contract on it must break, naming the import
    config = _config_with(tmp_path, 'name = "defs without dagster"\ntype = "forbidden"\n'
                                    'source_modules = ["d3ke_assets.defs"]\nforbidden_modules = ["dagster"]\n')
    proc = _lint(config)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "d3ke_assets.defs.common -> dagster" in proc.stdout, proc.stdout
