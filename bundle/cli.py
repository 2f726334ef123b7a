# SPDX-License-Identifier: Apache-2.0
"""Set-up shared by the command-line scripts in ``scripts/``: logging to the terminal, and the command itself.

Each script hands its function in ``bundle/`` to ``fire`` through :func:`fire_command`, so that the command-line
options and their help are the function's own signature and docstring (plus ``--verbose``), not a copy that can
drift; the command calls :func:`setup_logging` before the function. Library modules never configure logging
themselves; they only log. This module imports only the standard library.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["QUIET_LOGGERS", "fire_command", "setup_logging"]

#: Third-party loggers that are too chatty at INFO (highdicom logs every module it copies into a DICOM SEG); they are
#: limited to warnings unless ``verbose``.
QUIET_LOGGERS: tuple[str, ...] = ("highdicom",)


def setup_logging(verbose: bool = False, *, show_level: bool = True) -> None:
    """Log the bundle's messages to stderr the way every script does: INFO, or DEBUG with ``verbose``.

    Uses ``logging.basicConfig``, so it does nothing to a root logger that is already configured (a script imported
    and run from Python or a test keeps the caller's set-up).

    Args:
        verbose: also show DEBUG messages, and INFO messages of :data:`QUIET_LOGGERS`. Defaults to False.
        show_level: prefix each line with its level name (``INFO wrote ...``); False prints the message alone, for
            scripts whose output is a list of written files. Defaults to True.

    Example:
        >>> setup_logging(verbose=True)  # doctest: +SKIP
    """
    fmt = "%(levelname)s %(message)s" if show_level else "%(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt)
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def fire_command(
    function: Callable,
    *,
    defaults: Mapping[str, Any] | None = None,
    setup: Callable[[bool], None] | None = None,
    run: Callable[[Callable[[], Any]], Any] | None = None,
) -> Callable:
    """The command-line form of an API function, to hand to ``fire.Fire``: its own parameters, plus ``--verbose``.

    The command has ``function``'s signature and docstring (so ``--help`` lists its arguments with their
    descriptions) and one more keyword, ``verbose``. Calling it sets up logging (``setup(verbose)``, by default
    :func:`setup_logging`) and then calls ``function`` with the arguments given, ``defaults`` filling the ones not
    given; it returns what ``function`` returns. A value ``fire`` read as a number for a parameter annotated as a
    string or path (a folder named ``2024``) is passed as text.

    Args:
        function: the API function.
        defaults: values the command uses for parameters the caller does not give, in place of the function's own
            defaults (e.g. ``{"log_file": True}``). Defaults to None.
        setup: called with ``verbose`` before ``function``. Default None: :func:`setup_logging`.
        run: called with the bound call (no arguments) instead of calling it directly, to turn errors and results
            into messages and exit statuses; its return value is the command's. Default None.

    Returns:
        The command.

    Raises:
        ValueError: if ``function`` already has a ``verbose`` parameter or ``defaults`` names an unknown one.

    Example:
        >>> def add(a: int, b: int = 1) -> int:
        ...     return a + b
        >>> command = fire_command(add, defaults={"b": 2}, setup=lambda verbose: None)
        >>> list(inspect.signature(command).parameters), command(1), command(1, b=5)
        (['a', 'b', 'verbose'], 3, 6)
    """
    defaults = dict(defaults or {})
    signature = inspect.signature(function)
    if "verbose" in signature.parameters:
        raise ValueError(f"{function.__name__} already has a verbose parameter.")
    unknown = sorted(set(defaults) - set(signature.parameters))
    if unknown:
        raise ValueError(f"defaults name parameters {unknown} that {function.__name__} does not have.")
    parameters = [
        p.replace(default=defaults[p.name]) if p.name in defaults else p for p in signature.parameters.values()
    ]
    kinds = [p.kind for p in parameters]
    verbose = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool")
    position = kinds.index(inspect.Parameter.VAR_KEYWORD) if inspect.Parameter.VAR_KEYWORD in kinds else len(kinds)
    parameters.insert(position, verbose)

    @functools.wraps(function)
    def command(*args: Any, verbose: bool = False, **kwargs: Any) -> Any:
        (setup or setup_logging)(bool(verbose))
        bound = signature.bind_partial(*args, **kwargs)
        for name, value in defaults.items():
            bound.arguments.setdefault(name, value)
        for name, value in bound.arguments.items():
            if _is_text(signature.parameters[name]) and isinstance(value, (int, float)) and not isinstance(value, bool):
                bound.arguments[name] = str(value)
        call = functools.partial(function, *bound.args, **bound.kwargs)
        return run(call) if run is not None else call()

    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    doc = inspect.getdoc(function) or ""
    if "Args:" in doc:
        doc = doc.replace("Args:", "Args:\n    verbose: log debug messages too. Defaults to False.", 1)
    command.__doc__ = doc
    return command


def _is_text(parameter: inspect.Parameter) -> bool:
    """Whether a parameter is annotated as a string or path only (no number or bool among its types)."""
    annotation = parameter.annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return ("str" in text or "PathLike" in text) and not any(t in text for t in ("int", "float", "bool"))
