import numpy as np

from typedpipe.pipeline import sources
from typedpipe.pipeline.config import parse_config


def test_digits_as_stored_uint8():
    data = sources.load(parse_config(""))
    assert data.images.shape == (1797, 8, 8, 1)
    assert data.images.dtype == np.uint8
    assert data.images.min() == 0 and data.images.max() == 255
    assert data.labels.dtype == np.int32 and set(np.unique(data.labels)) == set(range(10))
    assert data.spec.describe() == "uint8 b 8 8 1 in [0, 255]"


def test_split_sizes_follow_fractions_and_are_stratified():
    data = sources.load(parse_config(""))
    parts = sources.split(data, 0.1, 0.2, seed=0)
    assert (len(parts.train), len(parts.val), len(parts.test)) == (1257, 180, 360)
    for part in (parts.train, parts.val, parts.test):
        shares = np.bincount(part.labels, minlength=10) / len(part)
        assert np.abs(shares - 0.1).max() < 0.02


def test_split_is_deterministic_by_seed():
    data = sources.load(parse_config(""))
    first = sources.split(data, 0.1, 0.2, seed=0)
    again = sources.split(data, 0.1, 0.2, seed=0)
    other = sources.split(data, 0.1, 0.2, seed=1)
    np.testing.assert_array_equal(first.test.images, again.test.images)
    assert not np.array_equal(first.test.images, other.test.images)
    # Disjoint: no image index lands in two parts.
    assert len(first.train) + len(first.val) + len(first.test) == len(data)


def test_onehot_labels_when_configured():
    data = sources.load(parse_config('[data]\nlabels = "onehot"\n'))
    assert data.labels.shape == (1797, 10)
    np.testing.assert_array_equal(data.class_ids, sources.load(parse_config("")).labels)
