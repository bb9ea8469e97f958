"""`animalclap-train catalogue`: a region's catalogue from species names."""

from __future__ import annotations

import pytest

from animalclap_edge.contracts.catalogue import Catalogue, Species
from training.catalogue_builder import build_catalogue
from training.cli import main


def _names(tmp_path, *lines):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_names_of_every_kind_become_taxonomy_rows_in_their_order(tmp_path, capsys):
    """A scientific name, an eBird code, a common name in any case and spacing, and a
    non-bird: each written with its order, family and genus, loadable as a checked
    catalogue; a species named twice is written once and said."""
    names = _names(tmp_path, "# my forest", "Turdus merula", "eurrob1", "tawny  OWL",
                   "", "Rana temporaria", "Eurasian Blackbird")  # fmt: skip
    out = tmp_path / "species.csv"
    assert main(["catalogue", "--names", str(names), "--out", str(out), "--region", "EU"]) == 0
    assert b"\r" not in out.read_bytes()  # "\n" line endings, not the csv module's CRLF
    cat = Catalogue.from_csv(out)
    assert cat.ids == ["eurbla", "eurrob1", "tawowl1", "rana_temporaria"]
    owl = cat[cat.index("tawowl1")]
    assert (owl.scientific_name, owl.order, owl.family, owl.genus, owl.regions) == (
        "Strix aluco", "Strigiformes", "Strigidae", "Strix", ("EU",)
    )  # fmt: skip
    assert cat[cat.index("rana_temporaria")].class_ == "Amphibia"
    said = capsys.readouterr().out
    assert "4 species (3 birds from eBird 2024, 1 from the curated non-bird list)" in said
    assert "'Eurasian Blackbird' (line 7) is eurbla, already line 2" in said


def test_a_hyphen_written_as_a_space_or_underscore_still_names_the_species(tmp_path):
    """ "black headed gull" was refused (nearest: Black-headed Gull), as folders named
    Pin-tailed_Sandgrouse were by `recordings`."""
    names = _names(tmp_path, "black headed gull", "Pin_tailed Sandgrouse")
    out = tmp_path / "species.csv"
    assert main(["catalogue", "--names", str(names), "--out", str(out)]) == 0
    assert Catalogue.from_csv(out).ids == ["bkhgul", "pitsan1"]


def test_unknown_names_are_refused_together_with_the_nearest_and_nothing_is_written(
    tmp_path, capsys
):
    names = _names(tmp_path, "Turdus merla", "Blackbird", "Foo barbarus", "Strix aluco")
    out = tmp_path / "species.csv"
    assert main(["catalogue", "--names", str(names), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists()
    assert "3 name(s) in" in err
    assert "'Turdus merla' (line 1; nearest: Turdus merula (Eurasian Blackbird, eurbla))" in err
    assert "'Blackbird' (line 2; nearest: " in err and "more)" in err  # the many blackbirds
    assert "'Foo barbarus' (line 3)" in err and "--skip-unknown" in err
    assert main(["catalogue", "--names", str(names), "--out", str(out), "--skip-unknown"]) == 0
    assert Catalogue.from_csv(out).ids == ["tawowl1"]
    assert "left out (--skip-unknown): 'Foo barbarus' (line 3)" in capsys.readouterr().out


def test_past_ten_unknown_names_those_with_a_near_match_are_the_ones_shown(tmp_path, capsys):
    """13 unknown names: the list stopped at the first 10 in file order, and the typo
    'Turdus merla' (line 13), the one the nearest name would fix, was among the hidden."""
    names = _names(tmp_path, *(f"Nonesuch{'x' * i} imaginarius" for i in range(12)), "Turdus merla")
    assert main(["catalogue", "--names", str(names), "--out", str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err
    assert "'Turdus merla' (line 13; nearest: Turdus merula" in err
    assert err.count("imaginarius") == 9 and "; and 3 more with no near match." in err


def test_species_neither_source_has_come_from_rows_the_user_writes(tmp_path, capsys):
    also = tmp_path / "mine.csv"
    header = "id,scientific_name,common_name,class,order,family,genus\n"
    also.write_text(
        header + "myobat1,Myotis daubentonii,Daubenton's Bat,Mammalia,Chiroptera,"
        "Vespertilionidae,Myotis\n",
        encoding="utf-8",
    )
    names = _names(tmp_path, "Strix aluco", "Myotis daubentonii")
    out = tmp_path / "species.csv"
    argv = ["catalogue", "--names", str(names), "--out", str(out), "--also", str(also)]
    assert main(argv) == 0
    assert Catalogue.from_csv(out).ids == ["tawowl1", "myobat1"]
    assert f"1 from {also}" in capsys.readouterr().out
    clash = "tawowl1,Bubo bubo,Eagle-Owl,Aves,Strigiformes,Strigidae,Bubo\n"
    also.write_text(also.read_text() + clash, encoding="utf-8")
    assert main(argv) == 2
    assert "id tawowl1 is 'Bubo bubo' there and 'Strix aluco'" in capsys.readouterr().err


def test_a_common_name_two_species_share_names_neither():
    """ "Robin" is two species' name: taking either would build a wrong catalogue."""
    rows = [
        Species("amerob", "Turdus migratorius", "Robin", "Aves", "P", "Turdidae", "Turdus"),
        Species("eurrob1", "Erithacus rubecula", "Robin", "Aves", "P", "M", "Erithacus"),
    ]
    reference = Catalogue(rows, source="ref")
    with pytest.raises(ValueError, match=r"'Robin' \(line 1; the common name of 2 species: "
                       r"Turdus migratorius \(Robin, amerob\), Erithacus"):  # fmt: skip
        build_catalogue([(1, "Robin")], reference)
    assert (
        build_catalogue([(1, "robin"), (2, "AMEROB")], reference, skip_unknown=True).repeats == []
    )


_HEADER = "id,scientific_name,common_name,class,order,family,genus\n"


def test_an_also_row_that_stands_for_a_looked_up_species_is_said_to_replace_it(tmp_path, capsys):
    """A row of also.csv with the scientific name (or the id) of a species of the names
    file replaced it unsaid: "12 species (7 from the curated list, 5 from also.csv)"."""
    also = tmp_path / "also.csv"
    also.write_text(
        _HEADER + "hylarb2,Hyla arborea,Tree Frog,Amphibia,Anura,Hylidae,Hyla\n"
        "rana_temporaria,Rana temporaria,Grass Frog,Amphibia,Anura,Ranidae,Rana\n",
        encoding="utf-8",
    )
    names = _names(tmp_path, "Hyla arborea", "Common Frog", "Bombina bombina")
    out = tmp_path / "species.csv"
    argv = ["catalogue", "--names", str(names), "--out", str(out), "--also", str(also)]
    assert main(argv) == 0
    assert Catalogue.from_csv(out).ids == ["rana_temporaria", "bombina_bombina", "hylarb2"]
    said = capsys.readouterr().out
    source = "eBird 2024 or the curated non-bird list"
    assert (
        "  replaced by --also: 'Hyla arborea' (line 1): the --also row hylarb2 (Hyla arborea) "
        f"replaces hyla_arborea (Hyla arborea) of {source}\n"
    ) in said
    assert (
        "  replaced by --also: 'Common Frog' (line 2): the --also row rana_temporaria "
        f"(Rana temporaria) replaces rana_temporaria (Rana temporaria) of {source}"
    ) in said
    assert said.count("replaced by --also") == 2


def test_a_subspecies_or_a_genus_alone_gets_a_hint(tmp_path, capsys):
    """ "Bombina variegata pachypus" and "Chorthippus sp." were refused with no nearest
    name: the first is its species', the second a genus (its species, or a genus row)."""
    names = _names(tmp_path, "Bombina variegata pachypus", "Chorthippus sp.", "Nonesuchia sp.")
    out = tmp_path / "species.csv"
    assert main(["catalogue", "--names", str(names), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        "'Bombina variegata pachypus' (line 1; nearest: Bombina variegata (Yellow-bellied "
        "Toad, bombina_variegata))"
    ) in err
    assert "'Chorthippus sp.' (line 2; nearest: Chorthippus " in err and "and 2 more;" in err
    assert (
        "Chorthippus alone is a genus, not a species: name one of its species, or write a "
        "row for the genus (scientific_name 'Chorthippus sp.', genus Chorthippus) in a CSV "
        "given with --also)"
    ) in err
    assert "'Nonesuchia sp.' (line 3; Nonesuchia alone is a genus, not a species: write a" in err
    also = tmp_path / "also.csv"  # the advice taken: the genus row is written
    also.write_text(
        _HEADER + "chorthippus,Chorthippus sp.,Grasshoppers,Insecta,Orthoptera,Acrididae,"
        "Chorthippus\n",
        encoding="utf-8",
    )
    names = _names(tmp_path, "Bombina variegata", "Chorthippus sp.")
    assert main(["catalogue", "--names", str(names), "--out", str(out), "--also", str(also)]) == 0
    assert Catalogue.from_csv(out).ids == ["bombina_variegata", "chorthippus"]
