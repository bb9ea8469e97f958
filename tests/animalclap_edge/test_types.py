"""The runtime type-checks as its users' code will check it (py.typed ships), at the
recorder's Python: mypy found `datetime.UTC` (3.11+) in the uplink's TLS path, an
ImportError on JetPack 6's Python 3.10 when a certificate expired."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def mypy_errors(paths: list[str], cache: Path) -> list[str]:
    """mypy's error lines for `paths` under pyproject.toml's [tool.mypy] settings."""
    api = pytest.importorskip("mypy.api", reason="mypy is in the dev extra")
    out, err, status = api.run(
        [*paths, "--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(cache)]
    )
    lines = [ln for ln in out.splitlines() if ": error:" in ln]
    assert status in (0, 1), err  # 2: mypy itself failed (a bad setting)
    return lines


@pytest.mark.timeout(300)
def test_the_runtime_package_type_checks_at_python_3_10(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert mypy_errors(["animalclap_edge"], tmp_path) == []


@pytest.mark.timeout(600)
def test_the_training_and_export_packages_type_check(tmp_path, monkeypatch):
    """Not shipped to recorders; kept clean so that a changed signature shows at every
    caller (until 2026-11-29 `LoadedClap.model` was typed `object`, so no use of the
    model was checked)."""
    monkeypatch.chdir(REPO)
    assert mypy_errors(["training", "export"], tmp_path) == []
