"""Answer every operation a servant does not simulate, at once, with an error naming it.

An AMD operation left unanswered hangs its caller forever, so each generated operation of a
servant class that the subclass does not override is replaced by one that fails fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import Ice
import omero


def _unsimulated(iface: str, op: str) -> Exception:
    error: Exception
    if iface.startswith("::omero::"):
        error = omero.InternalException(None, None, f"omero_sim does not simulate {iface}.{op}")
    else:
        error = Ice.OperationNotExistException(operation=op)
    return error


def _make(iface: str, op: str, amd: bool) -> Callable[..., Any]:
    if amd:

        def answer_async(self: Any, cb: Any, *args: Any, **kwargs: Any) -> None:
            cb.ice_exception(_unsimulated(iface, op))

        return answer_async

    def answer(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise _unsimulated(iface, op)

    return answer


def _generated(cls: type, name: str) -> bool:
    """True when `name` comes from a slice-generated class (they carry their own _ice_type)."""
    owner = next((k for k in cls.__mro__ if name in k.__dict__), None)
    return owner is not None and "_ice_type" in owner.__dict__


def fail_fast(cls: type) -> type:
    """Class decorator: every generated, not overridden operation raises at once."""
    iface = cls.ice_staticId()  # type: ignore[attr-defined]
    for attr in dir(cls):
        if not attr.startswith("_op_") or attr.startswith("_op_ice_"):
            continue  # ice_ping, ice_isA...: Ice.Object answers those
        op = attr[len("_op_") :]
        amd = hasattr(cls, op + "_async")
        name = op + "_async" if amd else op
        if _generated(cls, name):
            setattr(cls, name, _make(iface, op, amd))
    return cls
