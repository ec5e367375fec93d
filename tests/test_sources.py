import io

import numpy as np
import pytest
from PIL import Image

from typedpipe.contracts import ContractError, Diagnostic, LabelSpec
from typedpipe.contracts.diagnostics import MAX_ITEMS
from typedpipe.pipeline.check.static import check_labels
from typedpipe.pipeline.config import parse_config
from typedpipe.pipeline.sources import (
    batches,
    config_split,
    folder_audit,
    read_batch,
    split_indices,
)
from typedpipe.pipeline.sources.audit import spec_of
from typedpipe.pipeline.sources.integrity import Verdict, verify_bytes, verify_file


class Loaded:
    """Every record of a config's source, read through the real protocol."""

    def __init__(self, config, survey=None):
        source = config.source()
        self.survey = survey or source.survey()
        records = source.records(self.survey)
        self.images, self.labels = read_batch(records, np.arange(len(records)))
        self.class_names = self.survey.class_names
        self.label_spec = self.survey.label_spec
        self.spec = spec_of(self.images)
        self.class_ids = self.survey.class_ids


def load(config, survey=None):
    return Loaded(config, survey)


def test_digits_as_stored_uint8():
    data = load(parse_config(""))
    assert data.images.shape == (1797, 8, 8, 1)
    assert data.images.dtype == np.uint8
    assert data.images.min() == 0 and data.images.max() == 255
    assert data.labels.dtype == np.int32 and set(np.unique(data.labels)) == set(range(10))
    assert data.spec.describe() == "uint8 b 8 8 1 in [0, 255]"


def test_split_sizes_follow_fractions_and_are_stratified():
    labels = load(parse_config("")).labels
    parts = split_indices(labels, 0.1, 0.2, seed=0)
    assert (len(parts.train), len(parts.val), len(parts.test)) == (1257, 180, 360)
    for part in (parts.train, parts.val, parts.test):
        shares = np.bincount(labels[part], minlength=10) / len(part)
        assert np.abs(shares - 0.1).max() < 0.02


def test_split_is_deterministic_by_seed():
    labels = load(parse_config("")).labels
    first = split_indices(labels, 0.1, 0.2, seed=0)
    again = split_indices(labels, 0.1, 0.2, seed=0)
    other = split_indices(labels, 0.1, 0.2, seed=1)
    np.testing.assert_array_equal(first.test, again.test)
    assert not np.array_equal(first.test, other.test)
    # Disjoint and complete: every image lands in exactly one part.
    everything = np.concatenate([first.train, first.val, first.test])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(labels)))


def test_a_configs_split_takes_its_fractions_from_data_and_its_seed_from_the_top():
    classes = np.arange(200) % 4
    config = parse_config("seed = 5\n[data]\nval_fraction = 0.25\ntest_fraction = 0.1\n")
    parts = config_split(config, classes)
    assert (len(parts.train), len(parts.val), len(parts.test)) == (130, 50, 20)
    np.testing.assert_array_equal(parts.test, split_indices(classes, 0.25, 0.1, seed=5).test)
    assert not np.array_equal(parts.test, split_indices(classes, 0.25, 0.1, seed=0).test)
    with pytest.raises(ContractError) as raised:
        config_split(config, np.array([0, 0, 0, 1]))
    assert raised.value.diagnostics[0].code == "data.too_few"


def test_the_loader_shuffles_by_epoch_and_resumes_at_any_batch():
    records = load(parse_config("")).survey.records
    indices = np.arange(100, 200)

    def order(epoch, skip=0):
        return [
            b.labels for b in batches(records, indices, 16, shuffle_seed=3, epoch=epoch, skip=skip)
        ]

    first = order(0)
    assert len(first) == 100 // 16  # the last partial batch is dropped in training
    np.testing.assert_array_equal(np.concatenate(order(0)), np.concatenate(first))
    assert not np.array_equal(np.concatenate(order(1)), np.concatenate(first))
    np.testing.assert_array_equal(np.concatenate(order(0, skip=2)), np.concatenate(first[2:]))


def test_evaluation_batches_pad_and_mask_the_last_one():
    records = load(parse_config("")).survey.records
    read = list(batches(records, np.arange(10), 4, shard=(0, 1)))
    assert [int(b.mask.sum()) for b in read] == [4, 4, 2]
    assert all(b.images.shape == (4, 8, 8, 1) for b in read)


def test_two_processes_read_disjoint_halves_of_every_batch():
    records = load(parse_config("")).survey.records
    halves = [
        np.concatenate(
            [b.labels for b in batches(records, np.arange(64), 8, shuffle_seed=0, shard=(i, 2))]
        )
        for i in (0, 1)
    ]
    whole = np.concatenate(
        [b.labels for b in batches(records, np.arange(64), 8, shuffle_seed=0, shard=(0, 1))]
    )
    assert len(halves[0]) == len(halves[1]) == 32
    np.testing.assert_array_equal(np.sort(np.concatenate(halves)), np.sort(whole))


def test_onehot_labels_when_configured():
    data = load(parse_config('[data]\nlabels = "onehot"\n'))
    assert data.labels.shape == (1797, 10)
    np.testing.assert_array_equal(data.class_ids, load(parse_config("")).labels)


def _config(text: str):
    return parse_config(text)


def test_npz_channels_first_is_transposed_when_declared(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (12, 6, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=nhwc.transpose(0, 3, 1, 2), labels=np.arange(12) % 2)
    data = load(
        _config(f'[data]\nsource = "npz"\npath = "{tmp_path / "d.npz"}"\nlayout = "nchw"\n')
    )
    np.testing.assert_array_equal(data.images, nhwc)
    assert data.spec.describe() == "uint8 b 6 5 3 in [0, 255]"
    assert data.label_spec == LabelSpec("int", 2)


def test_npz_grayscale_without_a_channel_axis_gets_one(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 8, 8), np.float32), labels=np.arange(4))
    data = load(_config(f'[data]\nsource = "npz"\npath = "{tmp_path / "d.npz"}"\n'))
    assert data.images.shape == (4, 8, 8, 1)


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    pixels = {}
    for name in ("dog", "cat", "bird"):  # labels follow the sorted folder names
        (tmp_path / name).mkdir()
        for i in range(3):
            array = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(array).save(tmp_path / name / f"{i}.png")
            pixels[f"{name}/{i}"] = array
    return pixels


def test_imagefolder_decodes_every_file_with_its_folder_label(tmp_path):
    pixels = _folder(tmp_path)
    data = load(_config(f'[data]\nsource = "imagefolder"\npath = "{tmp_path}"\n'))
    assert data.class_names == ("bird", "cat", "dog")
    assert data.images.shape == (9, 10, 12, 3) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(data.images[3], pixels["cat/0"])
    np.testing.assert_array_equal(data.images[8], pixels["dog/2"])


def test_imagefolder_decode_settings_convert_mode_and_size(tmp_path):
    pixels = _folder(tmp_path)
    config = _config(
        f'[data]\nsource = "imagefolder"\npath = "{tmp_path}"\nmode = "gray"\n'
        'size = [5, 6]\nlabels = "onehot"\n'
    )
    survey = config.source().survey()
    # Colour dropped on request: said as a warning, never an error.
    assert [(d.code, d.severity) for d in survey.diagnostics] == [("data.lossy", "warning")]
    assert (survey.spec.height, survey.spec.width, survey.spec.channels) == (5, 6, 1)
    data = load(config, survey)
    assert data.images.shape == (9, 5, 6, 1)
    gray = Image.fromarray(pixels["bird/0"]).convert("L").resize((6, 5), Image.BILINEAR)
    np.testing.assert_array_equal(data.images[0, ..., 0], np.asarray(gray))
    assert data.labels.shape == (9, 3) and data.labels.dtype == np.float32


def test_imagefolder_records_refuse_a_folder_the_survey_faulted(tmp_path):
    _folder(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    config = _config(f'[data]\nsource = "imagefolder"\npath = "{tmp_path}"\n')
    with pytest.raises(ContractError) as caught:
        load(config)
    diagnostic = caught.value.diagnostic
    assert (diagnostic.code, diagnostic.items) == ("data.corrupt", ("cat/broken.png",))
    assert diagnostic.message == (
        "1 file(s) cannot be used: cat/broken.png: "
        "truncated: the file ends at byte 12, before the IHDR chunk"
    )
    assert diagnostic.hint == "remove or replace cat/broken.png, then run typedpipe check again"


def test_synthetic_matches_the_model_contract_without_generating_to_check():
    config = _config(
        '[data]\nsource = "synthetic"\nnum_samples = 40\n'
        "[model]\ninput = [6, 7, 2]\ninput_range = [-1.0, 1.0]\nnum_classes = 4\n"
    )
    survey = config.source().survey()
    assert survey.records is None  # the survey knows the spec from the config alone
    data = load(config, survey)
    assert data.images.shape == (40, 6, 7, 2) and data.images.dtype == np.float32
    assert data.images.min() >= -1.0 and data.images.max() <= 1.0
    np.testing.assert_array_equal(data.labels, survey.labels)
    assert np.bincount(data.labels).tolist() == [10, 10, 10, 10]


# Integrity: every file's structure is walked, so a broken file is named wherever it sits.


def _encoded(fmt: str, size=(12, 10), mode="RGB", **options) -> bytes:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize(
    "fmt, options",
    [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("JPEG", {"mode": "L"})],
)
def test_integrity_passes_whole_files_and_bytes_after_the_jpeg_end(fmt, options):
    data = _encoded(fmt, **options)
    assert verify_bytes(data) == Verdict(True, "", fmt)
    # Cameras and tools append padding or trailers after EOI; decoders ignore them.
    assert verify_bytes(data + b"\x00" * 64 + b"trailer\xff\xd9").fault == ""


def test_integrity_names_each_kind_of_broken_png():
    data = _encoded("PNG")
    idat = data.index(b"IDAT") - 4
    assert verify_bytes(data[: idat + 20]).fault == (
        f"truncated: the file ends at byte {idat + 20}, inside the IDAT chunk at byte {idat} "
        f"(which declares {int.from_bytes(data[idat : idat + 4], 'big'):,} bytes)"
    )
    assert verify_bytes(_flip(data, idat + 12)).fault == (
        f"damaged: the IDAT chunk at byte {idat} fails its CRC-32 check"
    )
    assert verify_bytes(data[:-12]).fault == (
        f"truncated: the file ends at byte {len(data) - 12}, before the IEND chunk"
    )
    assert (
        verify_bytes(data[:8]).fault == "truncated: the file ends at byte 8, before the IHDR chunk"
    )


def test_integrity_finds_a_jpeg_cut_anywhere_in_its_image_data():
    data = _encoded("JPEG", size=(40, 40))
    scan = data.index(b"\xff\xda")
    faults = {verify_bytes(data[:cut]).fault for cut in range(scan + 20, len(data) - 2)}
    assert faults == {
        f"truncated: the image data ends at byte {cut} without an end-of-image marker (FF D9)"
        for cut in range(scan + 20, len(data) - 2)
    }
    assert verify_bytes(data[:200]).fault.startswith("truncated: the file ends at byte 200, inside")


def test_integrity_of_empty_and_unknown_bytes(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert verify_file(empty) == Verdict(True, "an empty file (0 bytes)")
    # No walker knows these bytes: the caller decodes them (Pillow then names the fault).
    assert verify_bytes(b"hello, not an image") == Verdict(False)
    assert verify_bytes(_encoded("GIF")) == Verdict(False)


def _mixed_folder(root, count=8):
    for name in ("a", "b"):
        (root / name).mkdir()
        for i in range(count):
            (root / name / f"{i}.png").write_bytes(_encoded("PNG"))


def test_check_names_every_broken_file_not_only_those_in_the_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_audit, "SAMPLE_SIZE", 2)  # the first and the last file only
    _mixed_folder(tmp_path)
    jpeg = _encoded("JPEG")
    (tmp_path / "a" / "3-cut.jpg").write_bytes(jpeg[: len(jpeg) - 40])
    (tmp_path / "b" / "4-empty.png").write_bytes(b"")
    (tmp_path / "b" / "5-text.png").write_bytes(b"hello, not an image")
    gif = _encoded("GIF")  # no structural walk: decoded in full to find its cut
    (tmp_path / "b" / "6-cut.gif").write_bytes(gif[:-20])
    survey = (
        parse_config(f'[data]\nsource = "imagefolder"\npath = "{tmp_path}"\n').source().survey()
    )
    (corrupt,) = survey.diagnostics
    assert corrupt.code == "data.corrupt"
    assert corrupt.items == ("a/3-cut.jpg", "b/4-empty.png", "b/5-text.png", "b/6-cut.gif")
    assert corrupt.total_items == 4
    assert corrupt.message == (
        f"4 file(s) cannot be used: a/3-cut.jpg: truncated: the image data ends at byte "
        f"{len(jpeg) - 40} without an end-of-image marker (FF D9) (and 3 more)"
    )
    assert corrupt.got == (
        "1 truncated, 1 an empty file (0 bytes), 1 not an image file Pillow can read, 1 OSError"
    )
    assert corrupt.hint == (
        "remove or replace a/3-cut.jpg, b/4-empty.png, b/5-text.png and the 1 more listed, "
        "then run typedpipe check again"
    )
    assert len(survey.files) == 16


def test_json_items_carry_up_to_a_thousand_names_and_the_true_count(tmp_path):
    items = [f"c/{i}.png" for i in range(1500)]
    diagnostic = Diagnostic("data.corrupt", "m", items=items)
    assert diagnostic.items == tuple(items[:MAX_ITEMS]) and MAX_ITEMS == 1000
    assert diagnostic.total_items == 1500
    assert str(diagnostic).endswith("c/19.png ... and 1480 more")


def test_labels_out_of_range_in_a_folder_are_named_by_file(tmp_path):
    _mixed_folder(tmp_path, count=3)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.png").write_bytes(_encoded("PNG"))
    config = parse_config(
        f'[data]\nsource = "imagefolder"\npath = "{tmp_path}"\n[model]\nnum_classes = 2\n'
    )
    diagnostics = check_labels(config, config.source().survey())
    assert [(d.code, d.items) for d in diagnostics] == [("labels.range", ("c/x.png",))]


def test_transparency_dropped_on_purpose_is_not_warned_about(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i, channels in enumerate((3, 4, 4)):
            pixels = rng.integers(0, 256, (6, 6, channels), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    data = f'[data]\nsource = "imagefolder"\npath = "{tmp_path}"\nmode = "rgb"\n'
    (warning,) = parse_config(data).source().survey().diagnostics
    assert (warning.code, warning.severity) == ("data.lossy", "warning")
    assert warning.hint == (
        'if that is intended, say so: drop = ["transparency"] under [data]; '
        'else decode with mode = "keep" (4 channels) to keep transparency'
    )
    said = parse_config(data + 'drop = ["transparency"]\n')
    assert said.source().survey().diagnostics == ()
    # Dropping transparency says nothing of colour: gray still warns about it.
    gray = parse_config(data.replace('"rgb"', '"gray"') + 'drop = ["transparency"]\n')
    (warning,) = gray.source().survey().diagnostics
    assert warning.message == 'mode = "gray" drops the colour of 6 file(s)'


def test_a_file_damaged_after_the_check_is_named_when_training_reads_it(tmp_path):
    _folder(tmp_path)
    config = _config(f'[data]\nsource = "imagefolder"\npath = "{tmp_path}"\n')
    source = config.source()
    records = source.records(source.survey())
    (tmp_path / "cat" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # after a clean check
    with pytest.raises(ContractError) as caught:
        read_batch(records, np.arange(len(records)))
    diagnostic = caught.value.diagnostic
    assert (diagnostic.code, diagnostic.items) == ("data.corrupt", ("cat/1.png",))
    assert diagnostic.message.startswith("1 file(s) cannot be used: cat/1.png: ")
    assert diagnostic.expected == "readable uint8 b 10 12 3 in [0, 255] images"


def test_decoded_images_are_kept_for_the_next_epoch_where_they_fit(tmp_path, monkeypatch):
    """Read once, a file is not decoded again: damaging it afterwards changes nothing.
    Past the memory budget every read decodes, and sees the damage."""
    from typedpipe.pipeline.sources import cache

    pixels = _folder(tmp_path)
    config = _config(f'[data]\nsource = "imagefolder"\npath = "{tmp_path}"\n')
    source = config.source()
    survey = source.survey()
    records = source.records(survey)
    first, _ = read_batch(records, np.array([4, 0]))  # cat/1, bird/0
    (tmp_path / "cat" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    again, labels = read_batch(records, np.array([0, 5, 4]))  # cat/2 decoded, the others kept
    np.testing.assert_array_equal(again[[0, 2]], first[[1, 0]])
    np.testing.assert_array_equal(again[1], pixels["cat/2"])
    np.testing.assert_array_equal(labels, [0, 1, 1])

    monkeypatch.setattr(cache, "CACHE_BYTES", 9 * 10 * 12 * 3 - 1)  # one byte short
    uncached = source.records(survey)
    assert uncached.cache is None
    with pytest.raises(ContractError) as caught:
        read_batch(uncached, np.array([4]))
    assert caught.value.diagnostic.items == ("cat/1.png",)


def test_a_read_that_fails_keeps_nothing(tmp_path):
    _folder(tmp_path)
    config = _config(f'[data]\nsource = "imagefolder"\npath = "{tmp_path}"\n')
    source = config.source()
    records = source.records(source.survey())
    (tmp_path / "cat" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ContractError):
        read_batch(records, np.array([3, 4]))
    assert not records.cache.filled.any()
