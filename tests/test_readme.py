"""README's Python examples run as written (from the repository root, as README says)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


@pytest.mark.timeout(120)
def test_the_components_of_your_own_example_runs(realaudio, tmp_path, monkeypatch, capsys):
    """An integrator copied README's Python example and it stopped at a file that does
    not exist; this one must run, from the repository root, into a fresh database."""
    code = _block("class Hydrophone").replace('"hydrophone.db"', repr(str(tmp_path / "h.db")))
    monkeypatch.chdir(REPO)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("hydrophone:1 ok ") and out[0].endswith(" windows")
    assert re.fullmatch(r"\d+ detections, \d+ events logged", out[1]), out
    assert (tmp_path / "h.db").is_file()


@pytest.mark.timeout(300)
def test_the_components_of_your_own_example_type_checks(tmp_path, monkeypatch):
    """The Hydrophone example passed to `det.run` failed mypy: SourceBase.__enter__ was
    typed to return SourceBase, which is not a Source."""
    from tests.animalclap_edge.test_types import mypy_errors

    (tmp_path / "example.py").write_text(_block("class Hydrophone"))
    monkeypatch.chdir(REPO)
    assert mypy_errors([str(tmp_path / "example.py")], tmp_path / "cache") == []


def test_the_package_is_typed_for_its_users():
    """No py.typed: mypy skipped every import of the package ("missing library stubs or
    py.typed marker"), so an integrator's Source and sink were never checked."""
    from importlib.resources import files

    import tomllib

    assert files("animalclap_edge").joinpath("py.typed").is_file()
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in data["package-data"]["animalclap_edge"]
