"""A damaged student folder is refused naming the file, not with a bare parser error."""

import pytest

from animalclap_edge.contracts.frontend import CLAP_UNFUSED
from export.student import StudentConfig, StudentEncoder, load_student, save_student


def test_a_truncated_student_json_names_the_file(tmp_path):
    s = save_student(
        StudentEncoder(StudentConfig(width=0.25, embedding_dim=8), CLAP_UNFUSED), tmp_path / "s"
    )
    (s / "student.json").write_text('{"config": {"wid', encoding="utf-8")
    with pytest.raises(ValueError, match=r"student\.json: unreadable .*distil it again"):
        load_student(s)


def test_a_damaged_student_pt_names_the_file(tmp_path):
    s = save_student(
        StudentEncoder(StudentConfig(width=0.25, embedding_dim=8), CLAP_UNFUSED), tmp_path / "s"
    )
    (s / "student.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"student\.pt: unreadable .*distil it again"):
        load_student(s)
