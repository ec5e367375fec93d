"""`check`: the whole pipeline validated before any step; the preflight; the summary."""

from typedpipe.pipeline.check.static import check_draft as check_draft
from typedpipe.pipeline.check.static import check_pipeline as check_pipeline
from typedpipe.pipeline.check.static import errors as errors
