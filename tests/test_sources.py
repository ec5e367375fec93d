import numpy as np
import pytest
from PIL import Image

from typedpipe.contracts import ContractError, LabelSpec
from typedpipe.pipeline.config import parse_config
from typedpipe.pipeline.sources import batches, read_batch, split_indices
from typedpipe.pipeline.sources.audit import spec_of


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
    assert caught.value.diagnostic.code == "data.corrupt"
    assert caught.value.diagnostic.items[0].startswith("cat/broken.png: ")


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
