"""The one atomic folder writer: complete-or-nothing, and it never replaces what it did not make."""

import pytest

from basics.atomic import atomic_folder


def test_replaces_only_its_own_kind(tmp_path):
    out = tmp_path / "ckpt"
    with atomic_folder(out, marker="config.json") as tmp:
        (tmp / "config.json").write_text("1")
    with atomic_folder(out, marker="config.json") as tmp:  # same kind: replaced
        (tmp / "config.json").write_text("2")
    assert (out / "config.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no leftovers

    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="folder without config.json"):
        with atomic_folder(run, marker="config.json"):
            pass
    data = tmp_path / "lift.hdf5"
    data.write_text("episodes")
    with pytest.raises(FileExistsError, match="is a file"):
        with atomic_folder(data, marker="config.json"):
            pass
    assert (run / "precious.txt").read_text() == "keep" and data.read_text() == "episodes"


def test_failure_leaves_the_old_folder(tmp_path):
    out = tmp_path / "ckpt"
    with atomic_folder(out, marker="config.json") as tmp:
        (tmp / "config.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(out, marker="config.json") as tmp:
            (tmp / "config.json").write_text("half")
            raise RuntimeError("interrupted")
    assert (out / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_symlink_replaces_a_link_and_refuses_a_folder(tmp_path):
    from basics.atomic import atomic_symlink

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    atomic_symlink(tmp_path / "best", "a")
    atomic_symlink(tmp_path / "best", "b")
    assert str((tmp_path / "best").readlink()) == "b" and (tmp_path / "a").is_dir()  # the old target is untouched
    with pytest.raises(IsADirectoryError, match="is a folder, not a link"):
        atomic_symlink(tmp_path / "a", "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "best"]  # no temporary link left
