"""The shape flow of a whole pipeline: the data's spec, every stage, every layer."""

from pathlib import Path

from flax import nnx

from typedpipe.contracts import ContractError, ImageSpec
from typedpipe.models import build_model
from typedpipe.models.summary import Row, layer_rows
from typedpipe.pipeline.check.weights import weights_line
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import Survey
from typedpipe.pipeline.stages import Preprocess


def stage_rows(data: ImageSpec, stages, specs: list[ImageSpec]) -> list[Row]:
    rows = [Row("data", "source", data.describe())]
    rows += [
        Row(f"preprocess[{i}]", stage.op, spec.describe())
        for i, (stage, spec) in enumerate(zip(stages, specs, strict=True))
    ]
    return rows


def summarize(config: Config, survey: Survey | None = None) -> list[Row]:
    """One row for the data, each stage and each layer, built on shapes alone.

    Raises:
        ContractError: the data cannot be read, or a stage or layer refuses its input.
        ConfigError: a layer entry is invalid.
    """
    survey = survey if survey is not None else config.source().survey()
    if survey.spec is None:
        raise ContractError(survey.diagnostics)
    specs = Preprocess(config.preprocess).flow(survey.spec)
    m = config.model
    model = nnx.eval_shape(
        lambda: build_model(m.name, m.input, m.num_classes, m.layers, rngs=nnx.Rngs(0))
    )
    rows = stage_rows(survey.spec, config.preprocess, specs) + layer_rows(model)
    if m.weights is not None:
        # One line: where the weights come from, and whether the head starts new.
        kind = "bundle" if Path(m.weights).is_dir() else "safetensors"
        rows.append(Row("weights", kind, weights_line(config, model)))
    return rows
