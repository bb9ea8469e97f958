"""Training-test fixtures: shared/realaudio as a labelled recordings folder."""

import csv
import io
from pathlib import Path

import pytest

CATALOGUE = Path(__file__).parent / "data" / "realaudio_catalogue.csv"


@pytest.fixture(scope="session")
def real_folder(realaudio, tmp_path_factory) -> Path:
    """recordings.csv + catalogue.csv over shared/realaudio's species-labelled files."""
    return _real_folder(realaudio, tmp_path_factory.mktemp("realfolder"))


def _real_folder(realaudio: Path, tmp_path: Path) -> Path:
    cat = {
        r["scientific_name"]: r["id"] for r in csv.DictReader(io.StringIO(CATALOGUE.read_text()))
    }
    manifest = (realaudio / "manifest.csv").read_text(encoding="utf-8")
    rows = []
    for r in csv.DictReader(io.StringIO(manifest)):
        binomial = " ".join(r["scientific_name"].split()[:2])
        if binomial in cat:
            # one group per file: these clips carry no site or date
            rows.append(
                {
                    "path": str(realaudio / r["path"]),
                    "species_id": cat[binomial],
                    "site": r["path"],
                    "date": "",
                }
            )
    root = tmp_path / "real"
    root.mkdir()
    (root / "catalogue.csv").write_text(CATALOGUE.read_text())
    with open(root / "recordings.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "species_id", "site", "date"])
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture
def users_figure():
    """A figure open in the caller's own pyplot session, on a backend other than Agg:
    drawing our plots must neither switch the backend nor close it (a notebook's
    figures would vanish). Yields a check to call after drawing."""
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_backend()
    plt.switch_backend("svg")
    fig = plt.figure()

    def still_open() -> None:
        assert plt.get_backend() == "svg" and plt.fignum_exists(fig.number)

    try:
        yield still_open
    finally:
        plt.close(fig)
        plt.switch_backend(before)
