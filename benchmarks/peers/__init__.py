"""The same networks written by hand, as a user of each framework would: the peers typedpipe is
measured against. Each module has `train_images_per_second` and `inference_images_per_second`."""
