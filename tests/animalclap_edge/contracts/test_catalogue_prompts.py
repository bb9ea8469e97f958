import dataclasses
import random
from collections import Counter

import pytest

from animalclap_edge.contracts.catalogue import Catalogue, CatalogueError, Species
from animalclap_edge.contracts.prompts import (
    ALL_TEMPLATES,
    Template,
    render,
    sample_prompt,
    taxon_prompt,
)


def test_templates_render_broad_to_narrow(tiny_catalogue):
    sp = tiny_catalogue[0]
    assert render(sp, Template.COM) == "Eurasian Blackbird"
    assert render(sp, Template.SCI) == "Turdus merula"
    assert render(sp, Template.TAX) == "Aves Passeriformes Turdidae Turdus Turdus merula"
    assert render(sp, Template.SCI_COM) == "Turdus merula with common name Eurasian Blackbird"
    assert (
        render(sp, Template.TAX_COM)
        == "Aves Passeriformes Turdidae Turdus Turdus merula with common name Eurasian Blackbird"
    )
    assert taxon_prompt(sp, "family") == "Aves Passeriformes Turdidae"


def test_shuffled_taxonomy_keeps_elements_changes_order(tiny_catalogue):
    sp = tiny_catalogue[0]
    rng = random.Random(1)
    shuffled = {render(sp, Template.TAX, rng) for _ in range(20)}
    ordered = render(sp, Template.TAX)
    assert len(shuffled) > 1
    for s in shuffled:
        assert sorted(
            s.split(" with")[0].replace("Turdus merula", "Turdus_merula").split()
        ) == sorted(ordered.replace("Turdus merula", "Turdus_merula").split())


def test_sample_prompt_uniform_over_templates(tiny_catalogue):
    rng = random.Random(0)
    sp = tiny_catalogue[0]
    n = 5000
    counts = Counter(sample_prompt(sp, rng) for _ in range(n))
    assert set(counts) == {render(sp, t) for t in ALL_TEMPLATES}
    # each of the k templates about n/k times: 5 binomial standard deviations apart
    k = len(ALL_TEMPLATES)
    sd = (n * (1 / k) * (1 - 1 / k)) ** 0.5
    assert all(abs(c - n / k) < 5 * sd for c in counts.values()), counts


def test_template_parse_error_lists_choices():
    with pytest.raises(ValueError, match="sci\\+com"):
        Template.parse("latin")


def test_catalogue_csv_round_trip(tmp_path, tiny_catalogue):
    p = tmp_path / "species.csv"
    tiny_catalogue.to_csv(p)
    back = Catalogue.from_csv(p)
    assert list(back) == list(tiny_catalogue)
    assert back.taxa("genus") == sorted({sp.genus for sp in tiny_catalogue})
    assert [s.id for s in back.in_regions(["NA"])] == ["amebul"]


def test_catalogue_refuses_missing_taxonomy_and_duplicates(tmp_path):
    with pytest.raises(CatalogueError, match="missing family"):
        Catalogue([Species("a", "A b", "Ab", "Aves", "X", "", "A")])
    sp = Species("a", "A b", "Ab", "Aves", "X", "Y", "A")
    with pytest.raises(CatalogueError, match="duplicate id"):
        Catalogue([sp, sp])
    p = tmp_path / "bad.csv"
    p.write_text("id,scientific_name\nx,Y z\n")
    with pytest.raises(CatalogueError, match="missing column"):
        Catalogue.from_csv(p)


HEADER = "id,scientific_name,common_name,class,order,family,genus\n"


def test_a_row_whose_cells_do_not_match_the_header_is_refused_by_line(tmp_path):
    """An unquoted comma shifted every taxon after it (class "Eurasian", order "Aves"),
    and a missing cell was a traceback."""
    p = tmp_path / "species.csv"
    good = "amerob,Turdus migratorius,American Robin,Aves,Passeriformes,Turdidae,Turdus\n"
    for row, cells in (
        ("eurbla,Turdus merula,Blackbird, Eurasian,Aves,Passeriformes,Turdidae,Turdus\n", 8),
        ("grswoo,Picus viridis,Green Woodpecker,Aves,Piciformes,Picidae\n", 6),
        ("grswoo,Picus viridis,Green\rWoodpecker,Aves,Piciformes,Picidae,Picus\n", 3),
    ):
        p.write_text(HEADER + good + row, encoding="utf-8", newline="")
        with pytest.raises(CatalogueError, match=f"line 3 has {cells} cells, the header 7; quote"):
            Catalogue.from_csv(p)
    p.write_text(HEADER + good.replace("American Robin", '"Robin, American"'))
    assert Catalogue.from_csv(p)[0].common_name == "Robin, American"


def test_a_spreadsheets_catalogue_reads_and_latin1_is_named(tmp_path):
    p = tmp_path / "species.csv"
    row = "eurbla,Turdus merula,Amsel,Aves,Passeriformes,Turdidae,Turdus\n"
    p.write_bytes(b"\xef\xbb\xbf" + (HEADER + row).encode())  # Excel's "CSV UTF-8"
    assert Catalogue.from_csv(p).ids == ["eurbla"]
    p.write_bytes((HEADER + row.replace("Amsel", "Merle noir \u00e9")).encode("latin-1"))
    with pytest.raises(CatalogueError, match=r"not UTF-8 \(byte 0xe9 .*save it as UTF-8"):
        Catalogue.from_csv(p)


def test_one_species_under_two_ids_is_refused():
    a = Species(
        "yetsan1",
        "Pterocles gutturalis",
        "Yellow-throated Sandgrouse",
        "Aves",
        "P",
        "Q",
        "Pterocles",
    )
    two = Catalogue([a, Species("yetsan", *dataclasses.astuple(a)[1:])], source="region.csv")
    with pytest.raises(CatalogueError, match=r"region\.csv: 'yetsan' and 'yetsan1' are both 'Pt"):
        two.check_one_row_per_species()
    assert Catalogue([a]).check_one_row_per_species().ids == ["yetsan1"]


def test_a_bundles_catalogue_loads_as_exported_and_a_new_one_is_checked(tmp_path):
    """A recorder must still load a bundle exported before the one-row check; a
    catalogue read for training or export is refused."""
    p = tmp_path / "species.csv"
    rows = "yetsan1,Pterocles gutturalis,Sandgrouse,Aves,P,Q,Pterocles\nyetsan,Pterocles gutturalis,S,Aves,P,Q,Pterocles\n"
    p.write_text(HEADER + rows)
    with pytest.raises(CatalogueError, match="are both 'Pterocles gutturalis'"):
        Catalogue.from_csv(p)
    assert len(Catalogue.from_csv(p, strict=False)) == 2


def test_the_optional_regions_cell_may_be_left_off_a_row(tmp_path):
    p = tmp_path / "species.csv"
    p.write_text(
        HEADER.replace("genus", "genus,regions")
        + "eurbla,Turdus merula,Blackbird,Aves,Passeriformes,Turdidae,Turdus,EU\n"
        + "amerob,Turdus migratorius,American Robin,Aves,Passeriformes,Turdidae,Turdus\n"
    )
    cat = Catalogue.from_csv(p)
    assert [sp.regions for sp in cat] == [("EU",), ()]


def test_birdnames_ebird_taxonomy_is_a_real_source():
    """The eBird 2024 taxonomy shipped by birdnames loads into a valid catalogue."""
    from training.benchmark.taxonomy import ebird_catalogue

    cat = ebird_catalogue()
    assert len(cat) > 10000
    bl = next(sp for sp in cat if sp.scientific_name == "Turdus merula")
    assert (bl.class_, bl.order, bl.family, bl.genus) == (
        "Aves",
        "Passeriformes",
        "Turdidae",
        "Turdus",
    )


def test_a_genus_that_does_not_open_the_binomial_is_refused(tmp_path):
    """A row that leaves off `regions` and holds an unquoted comma has as many cells as
    the header, so only its genus shows the shift; a bundle's catalogue still loads."""
    p = tmp_path / "species.csv"
    header = HEADER.replace("genus", "genus,regions")
    p.write_text(
        header + "eurbla,Turdus merula,Blackbird, Eurasian,Aves,Passeriformes,Turdidae,Turdus\n"
    )
    with pytest.raises(
        CatalogueError,
        match=r"row 1 \(eurbla\): genus 'Turdidae' is not the first word of 'Turdus merula'",
    ):
        Catalogue.from_csv(p)
    assert Catalogue.from_csv(p, strict=False)[0].regions == ("Turdus",)  # shifted, as loaded
    p.write_text(header + "eurbla,Turdus merula,Blackbird,Aves,Passeriformes,Turdidae,turdus\n")
    assert Catalogue.from_csv(p)[0].genus == "turdus"  # case alone is not a shift
    p.write_text(header + "eurbla,Turdus merula,Blackbird,Aves,Passeriformes,Turdidae,Merula\n")
    with pytest.raises(CatalogueError, match="genus 'Merula'"):
        Catalogue.from_csv(p)


@pytest.mark.parametrize(
    ("scientific_name", "genus"),
    [
        ("Aedes aegypti", "Aedes (Stegomyia)"),  # a subgenus in the genus cell
        ("Aedes (Stegomyia) aegypti", "Aedes"),
        ("× Crataegomespilus dardarii", "Crataegomespilus"),  # a nothogenus
        ("×Crataegomespilus dardarii", "×Crataegomespilus"),
        ("Candidatus Pelagibacter ubique", "Pelagibacter"),
        ("Cygnus olor x Anser cygnoides", "Cygnus"),  # an intergeneric hybrid
        ("Anas sp.", "Anas"),
        ("Parus major major", "Parus"),  # a trinomial
    ],
)
def test_nomenclature_the_genus_check_must_accept(scientific_name, genus):
    row = Species("x1", scientific_name, "x", "C", "O", "F", genus)
    assert Catalogue([row]).check_genus_opens_binomial().ids == ["x1"]


def test_region_tags_and_header_names_are_read_without_the_spaces_around_them(tmp_path):
    """A team's spreadsheet writes "KE; TZ" and "id, scientific_name, ...": the tag
    " TZ" never matched `scoring.regions: [TZ]`, so the species silently left the
    recorder's list, and the header was refused as missing columns it visibly had."""
    p = tmp_path / "species.csv"
    p.write_text(
        "id, scientific_name, common_name, class, order, family, genus, regions\n"
        "helgui,Numida meleagris,Helmeted Guineafowl,Aves,Galliformes,Numididae,Numida,"
        "KE; TZ ;\n",
        encoding="utf-8",
    )
    cat = Catalogue.from_csv(p)
    assert cat[0].regions == ("KE", "TZ")
    assert len(cat.in_regions(["TZ"])) == 1


def test_names_are_read_with_runs_of_spaces_collapsed(tmp_path):
    """ "Numida  meleagris" (a double space typed in a spreadsheet) passed as a species
    apart from "Numida meleagris": one species under two ids, its scores split."""
    p = tmp_path / "species.csv"
    p.write_text(
        HEADER + "helgui,Numida  meleagris,Helmeted  Guineafowl,Aves,Galliformes,Numididae,Numida\n"
        "helgui2,Numida meleagris,Helmeted Guineafowl,Aves,Galliformes,Numididae,Numida\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogueError, match="'helgui2' and 'helgui' are both 'Numida meleagris'"):
        Catalogue.from_csv(p)
    cat = Catalogue.from_csv(p, strict=False)
    assert (cat[0].scientific_name, cat[0].common_name) == (
        "Numida meleagris",
        "Helmeted Guineafowl",
    )


def test_rows_that_name_more_or_less_than_one_species_are_named(tmp_path):
    """An eBird export holds "sp." rows, slash pairs and subspecies: each passed as a
    species and competed on the recorder with the species it overlaps."""
    rows = [
        ("numgui1", "Numida meleagris", "Helmeted Guineafowl", "Numida"),
        ("numgui2", "Numida meleagris reichenowi", "Helmeted Guineafowl (Reichenow's)", "Numida"),
        ("cisti1", "Cisticola sp.", "cisticola sp.", "Cisticola"),
        ("cisti2", "Cisticola chiniana/hunteri", "Rattling/Hunter's Cisticola", "Cisticola"),
        ("ratcis1", "Cisticola chiniana", "Rattling Cisticola", "Cisticola"),
        ("aedaeg", "Aedes (Stegomyia) aegypti", "Yellow fever mosquito", "Aedes"),
        (
            "lonsub",
            "Tragelaphus scriptus sylvaticus",
            "Bushbuck (a subspecies alone)",
            "Tragelaphus",
        ),
    ]
    path = tmp_path / "region.csv"
    path.write_text(
        "id,scientific_name,common_name,class,order,family,genus\n"
        + "".join(f"{i},{s},{c},Aves,Order,Family,{g}\n" for i, s, c, g in rows),
        encoding="utf-8",
    )
    notes = Catalogue.from_csv(path).not_one_species()
    assert [n.split(") ", 1)[0].rsplit("(", 1)[1] for n in notes] == ["numgui2", "cisti1", "cisti2"]
    assert notes[0].endswith("is a subspecies of Numida meleagris, also a row")
    assert notes[1].endswith("names a genus, not a species")
    assert notes[2].endswith("names two species or more")
