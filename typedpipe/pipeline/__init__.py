"""Sources, stages, config, check and training of a pipeline."""
