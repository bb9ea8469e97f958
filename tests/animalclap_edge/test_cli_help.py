"""How the command lines put an error in one line."""

import errno

from animalclap_edge.cli_help import one_line, refused_file


def test_a_refused_file_is_named_with_what_to_do_and_other_os_errors_are_not():
    ro = OSError(errno.EROFS, "Read-only file system", "/mnt/card/run/split.json")
    assert refused_file(ro) == (
        "/mnt/card/run/split.json: Read-only file system; give an --out on a writable file system"
    )
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out/shards/shard-000001.tar")
    assert refused_file(full).endswith("a run resumes where it stopped")
    assert refused_file(OSError(errno.ENOENT, "No such file or directory", "x")) is None
    # a write that fills the disk carries no file name
    assert refused_file(OSError(errno.ENOSPC, "No space left on device")).startswith(
        "No space left on device; free space there"
    )


def test_one_line_keeps_a_plain_message_and_takes_a_workers_last_line():
    assert one_line(ValueError("bad --set")) == "bad --set"
    wrapped = ValueError(
        "Caught UnreadableRecording in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "training.labelled_audio.UnreadableRecording: /a.flac: cannot read it (torn)\n"
    )
    assert one_line(wrapped) == "/a.flac: cannot read it (torn)"


def test_error_line_says_user_errors_and_refused_files_and_nothing_else():
    from animalclap_edge.cli_help import error_line

    assert error_line(ValueError("bad --set"), (ValueError,)) == "bad --set"
    full = OSError(errno.ENOSPC, "No space left on device", "/out")
    assert error_line(full, (ValueError,)).startswith("/out: No space left on device")
    assert error_line(KeyError("bug"), (ValueError,)) is None  # its traceback stands
