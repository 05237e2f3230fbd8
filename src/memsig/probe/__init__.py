"""Memory probes and the signatures they produce.

The package is also callable: ``memsig.probe(model, data, ...)`` is
:func:`memsig.api.probe`, so the short form reads as it should.
"""

import importlib
import sys
import types
from typing import Any

from memsig.probe.signature import Signature

__all__ = ["MLPProbe", "MultiHeadProbe", "Probe", "RidgeProbe", "Signature", "make_probe"]
_MODULE_OF = {
    "MLPProbe": "probes",
    "Probe": "probes",
    "RidgeProbe": "probes",
    "make_probe": "probes",
    "MultiHeadProbe": "multihead",
}


class _CallablePackage(types.ModuleType):
    """The package, callable; the probes load with Lightning when first named, so reading a
    :class:`Signature` (``report.py``, exports) does not import Lightning."""

    def __call__(self, *args: Any, **kwargs: Any) -> Signature:
        from memsig.api import probe

        return probe(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name not in _MODULE_OF:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{self.__name__}.{_MODULE_OF[name]}"), name)


sys.modules[__name__].__class__ = _CallablePackage
