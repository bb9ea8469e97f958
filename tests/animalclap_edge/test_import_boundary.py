"""The recorder install pulls no torch/transformers, and the runtime never imports them."""

import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "training", "export", "sounddevice", "tensorrt")


def test_runtime_imports_nothing_heavy():
    code = (
        "import sys, animalclap_edge.cli, animalclap_edge.detector, animalclap_edge.bundle, "
        "animalclap_edge.scoring, animalclap_edge.sources, animalclap_edge.store, animalclap_edge.config\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_heavy_import_statements_in_runtime_source():
    for p in (REPO / "animalclap_edge").rglob("*.py"):
        for line in p.read_text().splitlines():
            s = line.strip()
            for mod in ("torch", "transformers", "training", "export"):
                assert not s.startswith((f"import {mod}", f"from {mod} ", f"from {mod}.")), (
                    f"{p}: {s}"
                )


def test_plain_install_has_no_torch():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [
        d
        for d in deps
        if d.split("[")[0].split("=")[0].split(">")[0].strip() in ("torch", "transformers")
    ]
