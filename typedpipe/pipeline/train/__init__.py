"""Training: a pure state, a pure step, losses, numerics, optimizers, the loop and its callbacks."""
