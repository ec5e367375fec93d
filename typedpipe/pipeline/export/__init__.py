"""The exported model bundle: its weights, its artifacts and its contract.

A run folder's `model/` holds
- `model.jaxexport`: the whole inference function (stored images in, preprocessing
  included, class probabilities out, any batch size), serialized by `jax.export`
  with the weights inside (`jaxexport.py`). Serving it needs jax and numpy only.
- `weights/`: an Orbax checkpoint of the parameters and batch statistics, which
  `ExportedModel` rebuilds the Flax model from.
- `contract.json`, written last (`write.py`), so a bundle that has one is whole:
  the stored-image spec the artifacts accept, the class names, the preprocessing
  stages and the model's layers, each artifact's section, the resolved config,
  and the SHA-256 of every file it points at (`contract.py` reads it back).

Modules: `write` (export_model), `contract` (the schema both ways), `artifacts`
(the `ARTIFACTS` registry; `jaxexport` its one entry), `model` (`ExportedModel`),
`inputs` (files and arrays to the contract, `predict_files`), `data` (what a model
is evaluated on).
"""

from typedpipe.pipeline.export.artifacts import ARTIFACTS as ARTIFACTS
from typedpipe.pipeline.export.artifacts import Artifact as Artifact
from typedpipe.pipeline.export.artifacts import Inference as Inference
from typedpipe.pipeline.export.contract import OLDEST_READABLE as OLDEST_READABLE
from typedpipe.pipeline.export.contract import VERSION as VERSION
from typedpipe.pipeline.export.contract import read_contract as read_contract
from typedpipe.pipeline.export.data import Labelled as Labelled
from typedpipe.pipeline.export.data import source_data as source_data
from typedpipe.pipeline.export.data import test_split as test_split
from typedpipe.pipeline.export.inputs import Prediction as Prediction
from typedpipe.pipeline.export.jaxexport import FILE as ARTIFACT
from typedpipe.pipeline.export.jaxexport import write_jaxexport
from typedpipe.pipeline.export.model import ExportedModel as ExportedModel
from typedpipe.pipeline.export.write import export_model as export_model

ARTIFACTS.register("jaxexport", Artifact(ARTIFACT, write_jaxexport))
