"""Layering contracts (``.importlinter`` at the repository root), checked by import-linter."""

from pathlib import Path

import pytest

CONTRACTS = Path(__file__).resolve().parents[1] / ".importlinter"


def test_import_contracts_are_kept():
    cli = pytest.importorskip("importlinter.cli", reason="import-linter is not installed (pip install import-linter)")
    status = cli.lint_imports(config_filename=str(CONTRACTS), no_cache=True, no_logo=True)
    assert status == cli.EXIT_STATUS_SUCCESS, "an import contract is broken: see the report above"
