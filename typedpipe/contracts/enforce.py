"""Enforcement: jaxtyping annotations checked by beartype, failures turned into Diagnostics.

`@contract` wraps a stage's or layer's `__call__` in `jaxtyped(typechecker=beartype)`.
Under `jax.jit` the check runs once, while tracing. When it fails, the raw
`TypeCheckError` (which prints `{self.height}` unresolved) is replaced by a
`ContractError` whose Diagnostic names the stage, the resolved expected shape
(`float b 64 64 3`), the actual one, and the fix.
"""

import contextlib
import functools
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar

import jaxtyping
from beartype import beartype
from jaxtyping import AbstractArray, TypeCheckError, jaxtyped

from typedpipe.contracts import hints
from typedpipe.contracts.compare import Accepts, compare
from typedpipe.contracts.diagnostics import Diagnostic
from typedpipe.contracts.errors import ContractError
from typedpipe.contracts.specs import FLOAT_DTYPES

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def unchecked():
    """Trace without contract checks (jaxtyping's own switch): for measuring what they cost."""
    previous = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", previous)


def contract(fn: F) -> F:
    """Enforce `fn`'s jaxtyping annotations; a violation raises `ContractError`.

    Args:
        fn: a method whose first argument is the stage or layer (`self`).

    Returns:
        The checked method. Under `jax.jit` the check costs nothing per step.

    Raises:
        ContractError: an argument or the result breaks its annotation.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtyping import Array, Float
        >>> class Double:
        ...     @contract
        ...     def __call__(self, x: Float[Array, "b 3"]) -> Float[Array, "b 3"]:
        ...         return 2 * x
        >>> Double()(jnp.ones((2, 3))).shape
        (2, 3)
        >>> try:
        ...     Double()(jnp.ones((2, 4)))
        ... except ContractError as err:
        ...     print(err.diagnostic.code, "|", err.diagnostic.expected, "|", err.diagnostic.got)
        model.shape | float b 3 | float32 2 4
    """
    checked = jaxtyped(typechecker=beartype)(fn)
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return checked(*args, **kwargs)
        except TypeCheckError:
            bound = signature.bind(*args, **kwargs)
            raise ContractError(diagnose(fn, bound)) from None

    return wrapper  # type: ignore[return-value]


def stage_name(instance: Any) -> str:
    return getattr(instance, "name", None) or type(instance).__name__


def diagnose(fn: Callable[..., Any], bound: inspect.BoundArguments) -> Diagnostic:
    """Find the first argument (or the result) that breaks `fn`'s annotations."""
    annotations = typing.get_type_hints(fn)
    instance = next(iter(bound.arguments.values()))
    sizes: dict[str, int] = {}
    for name, value in bound.arguments.items():
        annotation = annotations.get(name)
        if _is_array_type(annotation):
            found = _mismatch(annotation, value, sizes, instance, role=name)
            if found:
                return found
    # Every argument conforms, so the result broke its contract: recompute it
    # unchecked (only on this error path) to say what it was.
    result = fn(*bound.args, **bound.kwargs)
    found = _mismatch(annotations["return"], result, sizes, instance, role="return")
    if found:
        return found
    return Diagnostic("model.shape", "contract violated", stage=stage_name(instance))


def _is_array_type(annotation: Any) -> TypeGuard[type[AbstractArray]]:
    return isinstance(annotation, type) and issubclass(annotation, AbstractArray)


def _dtype_kind(annotation: type[AbstractArray]) -> str:
    dtypes = set(annotation.dtypes) if isinstance(annotation.dtypes, (list, tuple)) else set()
    if not dtypes:
        return "any"
    if dtypes <= set(FLOAT_DTYPES) | {d for d in dtypes if d.startswith("float")}:
        return "float"
    if len(dtypes) == 1:
        return next(iter(dtypes))
    if all("int" in d for d in dtypes):
        return "uint" if all(d.startswith("uint") for d in dtypes) else "int"
    return "/".join(sorted(dtypes))


def _resolve(token: str, sizes: dict[str, int], instance: Any) -> int | str:
    """One dimension of an annotation, as far as it can be known: `{self.height}` -> 64."""
    if "{" in token:
        token = token.format(self=instance)
    if token.isdigit():
        return int(token)
    if _NAME.fullmatch(token):
        return sizes.get(token, token)
    if all(name in sizes for name in _NAME.findall(token)):
        # A symbolic size such as `(h-3)//2+1` or `h*w*32`, over bound axes only.
        return int(eval(token, {"__builtins__": {}}, dict(sizes)))
    return token


def _mismatch(
    annotation: type[AbstractArray], value: Any, sizes: dict[str, int], instance: Any, role: str
) -> Diagnostic | None:
    """Compare one value with its annotation, binding named axes into `sizes`."""
    stage = stage_name(instance)
    tokens = annotation.dim_str.split()
    expected = [_resolve(t, sizes, instance) for t in tokens]
    kind = _dtype_kind(annotation)
    shape = tuple(getattr(value, "shape", ()))
    dtype = str(getattr(value, "dtype", type(value).__name__))

    def text(dims) -> str:
        return " ".join(str(d) for d in dims)

    expected_text = f"{kind} {text(expected)}"
    got_text = f"{dtype} {text(shape)}"
    where = "its output" if role == "return" else f"argument '{role}'"

    def report(code: str, what: str, hint: str) -> Diagnostic:
        return Diagnostic(
            code,
            f"{where} {what}",
            stage=stage,
            expected=expected_text,
            got=got_text,
            hint=hint,
        )

    dtype_ok = kind == "any" or dtype in annotation.dtypes
    if role == "labels" and (not dtype_ok or len(shape) != len(tokens)):
        wanted = "onehot" if len(tokens) == 2 else "int"
        return report("labels.format", f"should be {wanted} labels", hints.label_format(wanted))
    if not dtype_ok:
        return report("dtype.input", f"has dtype {dtype}", hints.dtype(kind == "float"))
    variadic = [i for i, t in enumerate(tokens) if t == "..." or t.startswith("*")]
    if len(shape) < len(tokens) - len(variadic) or (not variadic and len(shape) != len(tokens)):
        return report(
            "shape.rank",
            f"has {len(shape)} axes where {len(tokens)} are declared",
            "add or remove the missing axis (batch images as b h w c)",
        )
    # The axes after a variadic one (`b *rest c`) are matched from the end; `aligned` is
    # the expected size of each axis of `shape` (a name for those the variadic one takes).
    pairs = list(enumerate(tokens))
    aligned: list[int | str] = list(expected)
    if variadic:
        first, after = variadic[0], len(tokens) - variadic[0] - 1
        start = len(shape) - after
        pairs = [*pairs[:first], *zip(range(start, len(shape)), tokens[first + 1 :], strict=True)]
        middle: list[int | str] = ["_"] * (start - first)
        aligned = [*expected[:first], *middle, *expected[first + 1 :]]
    for axis, token in pairs:
        size = shape[axis]
        want = _resolve(token, sizes, instance)
        if token == "_" or token.startswith("*") or token == "...":
            continue
        if isinstance(want, str) and _NAME.fullmatch(want):
            sizes[want] = size
            continue
        if want == size:
            continue
        return _axis_report(report, shape, aligned, axis)
    return None


def _axis_report(report, shape: tuple[int, ...], expected: list, axis: int) -> Diagnostic:
    if len(shape) == 4:
        height, width, channels = (e if isinstance(e, int) else None for e in expected[1:])
        accepts = Accepts("any", height, width, channels)
        for found in compare(accepts, shape, "any"):
            return report(found.code, found.message, hints.fix(found.code, accepts, shape))
    return report(
        "model.shape",
        f"has size {shape[axis]} on axis {axis}",
        "check the layer sizes in [model]",
    )
