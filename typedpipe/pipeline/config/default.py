"""The built-in default config: what `typedpipe train` trains when it is given none."""

import importlib.resources
from pathlib import Path


def default_config_path() -> Path:
    """`examples/digits.toml`: shipped inside the package, or beside it in a checkout.

    Example:
        >>> default_config_path().name
        'digits.toml'
    """
    packaged = importlib.resources.files("typedpipe") / "examples" / "digits.toml"
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "examples" / "digits.toml"
