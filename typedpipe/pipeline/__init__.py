"""Sources, stages, config, check and training of a pipeline."""

# Registers the "imagefolder" source next to those defined in `sources`.
from typedpipe.pipeline import imagefolder as imagefolder
