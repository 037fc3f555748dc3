"""Import names: everything under recplane.*, nothing that shadows the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False)


def test_components_import_under_recplane(tmp_path: Path) -> None:
    result = _run("import recplane.operator, recplane.trainer, recplane.serving, recplane.api", tmp_path)
    assert result.returncode == 0, result.stderr


def test_bare_component_names_are_not_importable(tmp_path: Path) -> None:
    result = _run(
        "import importlib.util as u, operator\n"
        "assert u.find_spec('trainer') is None and u.find_spec('serving') is None\n"
        "assert operator.__file__.endswith('operator.py'), operator.__file__",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_stdlib_operator_wins_even_from_the_repository_root() -> None:
    result = _run("import operator, collections; print(operator.__file__)", ROOT)
    assert result.returncode == 0, result.stderr
    assert not result.stdout.strip().startswith(str(ROOT / "operator"))


def test_api_imports_nothing_else_of_recplane(tmp_path: Path) -> None:
    result = _run(
        "import sys, recplane.api, recplane.api.crd, recplane.api.resource\n"
        "bad = [m for m in sys.modules if m.startswith('recplane.') and not m.startswith('recplane.api')]\n"
        "assert not bad, bad\n"
        "assert 'torch' not in sys.modules",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
