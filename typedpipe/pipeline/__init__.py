"""Sources, stages, config, check and training of a pipeline."""

# Register the sources that live in their own modules next to "digits".
from typedpipe.pipeline import imagefolder as imagefolder
from typedpipe.pipeline import npz as npz
from typedpipe.pipeline import synthetic as synthetic
