import numpy as np
import pytest

from animalclap_edge.contracts.traits import (
    TraitSchema,
    TraitSchemaError,
    read_trait_table,
    write_trait_table,
)

PAPER_TRAITS = {"activity_pattern", "locomotion", "migration", "habitat", "climate"}


def test_default_schema_has_22_traits_with_the_papers_five():
    s = TraitSchema.default()
    assert len(s.traits) == 22
    assert {t.name for t in s.traits} >= PAPER_TRAITS
    assert "forest" in s.trait("habitat").values
    assert "tropical_subtropical" in s.trait("climate").values
    assert {t.kind for t in s.traits} == {"categorical", "multilabel"}


def test_swap_schema_without_code(tmp_path):
    p = tmp_path / "bats.yaml"
    p.write_text(
        "name: bats\ntraits:\n"
        "  - {name: echolocation, kind: categorical, values: [fm, cf, qcf]}\n"
        "  - {name: roost, kind: multilabel, values: [cave, tree, building]}\n"
    )
    s = TraitSchema.load(p)
    assert s.n_outputs == 6 and s.slices()["roost"] == slice(3, 6)
    table = {
        "a": {"echolocation": ["cf"], "roost": ["cave", "tree"]},
        "b": {"echolocation": ["fm"]},
    }
    write_trait_table(tmp_path / "t.csv", table, s)
    back = read_trait_table(tmp_path / "t.csv", s)
    y, known = s.encode(back, ["a", "b"])
    assert y[0].tolist() == [0, 1, 0, 1, 1, 0]
    assert known.tolist() == [[True, True], [True, False]]


def test_schema_errors_name_the_problem(tmp_path):
    with pytest.raises(TraitSchemaError, match="kind"):
        TraitSchema.from_dict({"traits": [{"name": "x", "kind": "ordinal", "values": ["a", "b"]}]})
    with pytest.raises(TraitSchemaError, match="unknown key"):
        TraitSchema.from_dict(
            {"traits": [{"name": "x", "kind": "categorical", "values": ["a", "b"], "colour": 1}]}
        )
    s = TraitSchema.default()
    with pytest.raises(TraitSchemaError, match="not in schema values"):
        s.encode({"a": {"activity_pattern": ["sometimes"]}}, ["a"])
    with pytest.raises(TraitSchemaError, match="needs one value"):
        s.encode({"a": {"activity_pattern": ["diurnal", "nocturnal"]}}, ["a"])
    y, known = s.encode({}, ["zz"])
    assert not known.any() and np.all(y == 0)
