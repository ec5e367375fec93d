"""The stratified train / val / test split: indices, so a split never copies the data.

`config_split` is the split a config makes, the one training, `check` and `eval`
all compute, so that they agree on which record is in which part.
"""

import dataclasses
from typing import Protocol

import numpy as np

from typedpipe.contracts import ContractError, Diagnostic


@dataclasses.dataclass(frozen=True)
class Splits:
    """Record indices of each part, in record order."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_indices(
    classes: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> Splits:
    """Stratified train/val/test indices: every class keeps its share in each part.

    Raises:
        ContractError: `data.too_few`, when a class is too small to be split.
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(classes))

    def cut(pool: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        if fraction == 0:
            return pool, pool[:0]
        try:
            return train_test_split(
                pool, test_size=fraction, random_state=seed, stratify=classes[pool]
            )
        except ValueError as err:
            values, counts = np.unique(classes, return_counts=True)
            raise ContractError(
                Diagnostic(
                    "data.too_few",
                    f"the data cannot be split by class: {err}",
                    stage="data",
                    expected="enough images per class for train, val and test",
                    got=f"{len(classes)} images; the smallest class ({values[counts.argmin()]}) "
                    f"has {counts.min()}",
                    hint="add images to the smallest classes, or lower val_fraction and "
                    "test_fraction under [data] (0 skips that split)",
                )
            ) from None

    rest, test = cut(indices, test_fraction)
    train, val = cut(rest, val_fraction / (1.0 - test_fraction))
    return Splits(np.sort(train), np.sort(val), np.sort(test))


class _Fractions(Protocol):
    @property
    def val_fraction(self) -> float: ...
    @property
    def test_fraction(self) -> float: ...


class SplitConfig(Protocol):
    """What of a config decides its split: its `seed` and `[data]`'s `val_fraction` and
    `test_fraction` (a `Config` is one; sources do not import the config)."""

    @property
    def seed(self) -> int: ...
    @property
    def data(self) -> _Fractions: ...


def config_split(config: SplitConfig, class_ids: np.ndarray) -> Splits:
    """The split `config` makes of records of `class_ids`: the same in training, `check`
    and `eval`.

    Raises:
        ContractError: `data.too_few`, when a class is too small to be split.

    Example:
        >>> from typedpipe.pipeline.config import parse_config
        >>> config = parse_config("[data]\\nval_fraction = 0.25\\ntest_fraction = 0.25\\n")
        >>> splits = config_split(config, np.arange(8) % 2)
        >>> len(splits.train), len(splits.val), len(splits.test)
        (4, 2, 2)
    """
    data = config.data
    return split_indices(class_ids, data.val_fraction, data.test_fraction, config.seed)
