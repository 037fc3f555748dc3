"""The test cluster's build script: without a usable Go it stops at once and says what to install."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from recplane.devcluster import DevClusterError, binaries

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "build-cluster-bins.sh"
TOOLS = ("bash", "dirname", "sed", "mktemp", "mkdir", "date", "rm", "cp", "grep", "cut", "cat", "mv", "tail")


def run_without_go(tmp_path: Path, fake_go: str | None = None) -> subprocess.CompletedProcess[str]:
    """The script with a PATH holding the shell tools it uses and no Go (or a fake one)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run this test"
        (bin_dir / tool).symlink_to(found)
    if fake_go is not None:
        go = bin_dir / "go"
        go.write_text(fake_go)
        go.chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "RECPLANE_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [str(bin_dir / "bash"), str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_missing_go_toolchain_is_named_with_how_to_install_it(tmp_path: Path) -> None:
    proc = run_without_go(tmp_path)
    assert proc.returncode == 1
    assert "Go >= 1.24 is required to build the test cluster" in proc.stderr
    assert "apt-get install golang" in proc.stderr
    assert not (tmp_path / "cache").exists()  # nothing was started


def test_an_old_go_is_named_by_its_version(tmp_path: Path) -> None:
    proc = run_without_go(tmp_path, '#!/bin/bash\n[ "$1 $2" = "env GOVERSION" ] && echo go1.19.3\n')
    assert proc.returncode == 1
    assert "found go1.19.3" in proc.stderr
    assert "install a newer Go" in proc.stderr


def test_a_failed_build_reaches_the_tests_with_the_scripts_own_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = tmp_path / "build-cluster-bins.sh"
    failing.write_text(
        "echo 'build-cluster-bins: building kubernetes v1.35.4 failed; fix the error above' >&2\nexit 1\n"
    )
    monkeypatch.setattr(binaries, "BUILD_SCRIPT", failing)
    with pytest.raises(DevClusterError, match=r"exit 1\):\nbuild-cluster-bins: building kubernetes v1\.35\.4 failed"):
        binaries.ensure_binaries()
