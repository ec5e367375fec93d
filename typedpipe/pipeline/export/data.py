"""The labelled images an exported model is evaluated on: its run's test split, or a
source another config names, read only once it meets the model's contract."""

import dataclasses

import numpy as np

from typedpipe.contracts import ContractError
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import config_split, read_batch


@dataclasses.dataclass(frozen=True)
class Labelled:
    """Images as stored, their class ids as the model numbers them, and which split they are."""

    images: np.ndarray
    class_ids: np.ndarray
    split: str  # "test", or "all" where there is no test split or the data is another's


def test_split(model) -> Labelled:
    """The test split `model` (an `ExportedModel`) was trained with: the same source,
    fractions and seed; every image where the run kept no test split (`split == "all"`)."""
    config = model.config
    source = config.source()
    survey = source.survey()
    records = source.records(survey)
    indices = config_split(config, survey.class_ids).test
    split = "test"
    if not len(indices):  # test_fraction = 0: evaluate on everything, and say so
        indices, split = np.arange(len(records)), "all"
    images, _ = read_batch(records, indices)
    return Labelled(images, survey.class_ids[indices], split)


def source_data(model, config: Config) -> Labelled:
    """Every image of the source `config` names, once it meets `model`'s contract.

    Raises:
        ContractError: the source's own faults; a shape or dtype off the contract
            (before a pixel is read); a class the model does not have.
    """
    source = config.source()
    survey = source.survey()
    if survey.errors:
        raise ContractError(survey.errors)
    if survey.spec is not None:
        model.check_spec(survey.spec)
    class_ids = model.class_ids(survey.class_ids, survey.class_names)
    records = source.records(survey)
    images, _ = read_batch(records, np.arange(len(records)))
    return Labelled(images, class_ids, "all")
