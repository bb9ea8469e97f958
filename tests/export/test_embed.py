"""`animalclap-export embed`: the text side on its own."""

import json

import numpy as np

from export.cli import main


def test_embed_writes_unit_fp16_species_and_taxon_embeddings(
    tiny_checkpoint, tiny_catalogue, tmp_path, capsys
):
    tiny_catalogue.to_csv(tmp_path / "species.csv")
    args = [
        "embed",
        "--checkpoint",
        str(tiny_checkpoint),
        "--catalogue",
        str(tmp_path / "species.csv"),
    ]
    assert main([*args, "--out", str(tmp_path / "t"), "--templates", "tax+com", "sci"]) == 0
    summary = json.loads(capsys.readouterr().out)
    sp = np.load(tmp_path / "t" / "text_embeddings.npy")
    tx = np.load(tmp_path / "t" / "taxon_embeddings.npy")
    assert sp.dtype == tx.dtype == np.float16 and sp.shape == (len(tiny_catalogue), summary["dim"])
    np.testing.assert_allclose(np.linalg.norm(sp.astype(np.float32), axis=1), 1, atol=2e-3)
    # a bundle's names and formats, read by the runtime's own reader
    from animalclap_edge.bundle import _read_taxa
    from animalclap_edge.contracts.catalogue import Catalogue

    taxa = _read_taxa(tmp_path / "t" / "taxa.csv")
    assert [s.id for s in Catalogue.from_csv(tmp_path / "t" / "species.csv")] == [
        s.id for s in tiny_catalogue
    ]
    assert len(taxa) == len(tx) == summary["taxa"]
    assert {lvl for lvl, _ in taxa} == {"class", "order", "family", "genus"}
    # each row is the prompt ensemble of its species: the normalised sum of both
    # templates' embeddings, in catalogue order (not only some unit vector)
    from animalclap_edge.contracts.prompts import Template, render, taxon_prompt
    from training.model import load_clap, text_embeddings

    clap = load_clap(str(tiny_checkpoint))
    both = sum(
        text_embeddings(clap, [render(s, Template.parse(t)) for s in tiny_catalogue]).numpy()
        for t in ("tax+com", "sci")
    )
    want = both / np.linalg.norm(both, axis=1, keepdims=True)
    np.testing.assert_allclose(sp.astype(np.float32), want, atol=2e-3)
    first = {}
    for s in tiny_catalogue:
        for lvl, name in taxa:
            if s.taxon(lvl) == name:
                first.setdefault((lvl, name), taxon_prompt(s, lvl))
    want_tx = text_embeddings(clap, [first[(lvl, name)] for lvl, name in taxa]).numpy()
    np.testing.assert_allclose(tx.astype(np.float32), want_tx, atol=2e-3)

    # a second run into the same folder is refused, in one line, and changes nothing
    before = (tmp_path / "t" / "text_embeddings.npy").read_bytes()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "t"), "--templates", "sci"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--overwrite" in err
    assert (tmp_path / "t" / "text_embeddings.npy").read_bytes() == before
    assert main([*args, "--out", str(tmp_path / "t"), "--templates", "sci", "--overwrite"]) == 0
    assert (tmp_path / "t" / "text_embeddings.npy").read_bytes() != before
    # a folder from before embed took a bundle's names is refused the same way
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "species_embeddings.npy").write_bytes(before)
    assert main([*args, "--out", str(tmp_path / "old")]) == 2


def test_embed_refuses_a_catalogue_without_taxonomy(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("id,scientific_name,common_name\na,Aa bb,Cc\n")
    rc = main(
        [
            "embed",
            "--checkpoint",
            str(tiny_checkpoint),
            "--catalogue",
            str(tmp_path / "bad.csv"),
            "--out",
            str(tmp_path / "t"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "class" in err
    assert err.startswith(f"animalclap-export: error: --catalogue {tmp_path / 'bad.csv'}: missing")
