"""`typedpipe doctor`: what JAX sees on this machine."""

from typedpipe.cli.exits import EXIT_OK
from typedpipe.cli.render import print_json


def cmd_doctor(args) -> int:
    import jax

    info = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }
    if args.json:
        print_json(args, info)
    else:
        print("\n".join(f"{k}: {v}" for k, v in info.items()))
    return EXIT_OK
