import os

import pytest

from typedpipe.pipeline.sources.walk import (
    IMAGE_SUFFIXES,
    Unusable,
    find_images,
    image_files,
    unusable_diagnostics,
)


def _folder(root):
    """Two images (one in a sub-folder), a dangling link, a FIFO, a link back up, a hidden
    file and a text file."""
    (root / "sub").mkdir(parents=True)
    (root / "b.png").write_bytes(b"")
    (root / "sub" / "a.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"")
    (root / "gone.png").symlink_to(root / "nowhere.png")
    (root / "sub" / "up").symlink_to(root)
    os.mkfifo(root / "pipe.png")
    return root


def test_the_walk_finds_the_images_and_names_what_it_cannot_use(tmp_path):
    root = _folder(tmp_path / "photos")
    files, unusable = find_images([root])
    assert files == [root / "b.png", root / "sub" / "a.jpg"]
    assert unusable == [
        Unusable(root / "gone.png", "link", "a link that points at nothing"),
        Unusable(root / "pipe.png", "special", "not a regular file (a FIFO)"),
        Unusable(root / "sub" / "up", "link", "links back to a folder above it"),
    ]


def test_a_data_folder_gets_one_diagnostic_per_kind_its_entries_named_inside_it(tmp_path):
    root = _folder(tmp_path / "photos")
    _, unusable = find_images([root])
    link, special = unusable_diagnostics(unusable, name=lambda p: str(p.relative_to(root)))
    assert (link.code, link.stage, link.message) == (
        "data.link",
        "data",
        "2 symbolic link(s) point at nothing or loop",
    )
    assert link.items == (
        "gone.png: a link that points at nothing",
        "sub/up: links back to a folder above it",
    )
    assert (link.expected, link.got) == ("links to existing image files and folders", "2 unusable")
    assert link.hint == "restore the link targets, or remove the links"
    assert special.code == "data.special"
    assert special.items == ("pipe.png: not a regular file (a FIFO)",)
    assert special.hint == "remove them: a FIFO, socket or device is never an image"


def test_files_passed_to_predict_get_a_diagnostic_each_and_the_rest_are_kept(tmp_path):
    root = _folder(tmp_path / "photos")
    (tmp_path / "empty").mkdir()
    loose = tmp_path / "loose.png"
    os.mkfifo(loose)
    files, diagnostics = image_files([root, tmp_path / "empty", loose, tmp_path / "c.png"])
    assert files == [root / "b.png", root / "sub" / "a.jpg", tmp_path / "c.png"]
    by_item = {d.items: d for d in diagnostics}
    gone = by_item[(str(root / "gone.png"),)]
    assert (gone.code, gone.stage, gone.message) == (
        "data.link",
        "input",
        f"{root / 'gone.png'}: a link that points at nothing",
    )
    assert (gone.expected, gone.got) == ("a readable image file", "a link that points at nothing")
    assert gone.hint == "restore the link's target, or remove the link"
    fifo = by_item[(str(loose),)]
    assert (fifo.code, fifo.message) == ("data.special", f"{loose}: not a regular file")
    assert fifo.hint == "pass image files: a FIFO, socket or device is never an image"
    empty = by_item[(str(tmp_path / "empty"),)]
    assert (empty.code, empty.stage) == ("data.empty", "input")
    assert empty.message == f"the folder {tmp_path / 'empty'} holds no image file"
    assert empty.expected == f"files ending in {', '.join(sorted(IMAGE_SUFFIXES))}"
    assert len(diagnostics) == 5  # gone.png, pipe.png, sub/up, the empty folder, loose.png


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_a_folder_that_may_not_be_listed_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        files, diagnostics = image_files([tmp_path])
    finally:
        locked.chmod(0o700)
    assert files == []
    (permission,) = diagnostics
    assert permission.code == "data.permission"
    assert permission.message == f"{locked}: cannot be listed: Permission denied"
    assert permission.hint == "grant read access to it, or leave it out"
