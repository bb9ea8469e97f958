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


@pytest.fixture(scope="session")
def pretrain_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint for (pre)training tests: fast HTS-AT and no dropout, so runs
    with different rank layouts can be compared number for number."""
    import torch

    from animalclap_edge.contracts.frontend import CLAP_UNFUSED
    from training.labelled_audio import open_labelled
    from training.model import build_tokenizer, new_clap_model, save_checkpoint, small_clap_config
    from training.train import all_prompts

    tok = build_tokenizer(all_prompts(open_labelled("tiny")), vocab_size=400)
    config = small_clap_config(vocab_size=len(tok), projection_dim=32, audio="fast")
    for sub in (config.text_config, config.audio_config):
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            if hasattr(sub, name):
                setattr(sub, name, 0.0)
    torch.manual_seed(0)
    model = new_clap_model(config)
    return save_checkpoint(model, tok, CLAP_UNFUSED, tmp_path_factory.mktemp("pt") / "ckpt")
