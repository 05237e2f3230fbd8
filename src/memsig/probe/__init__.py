"""Memory probes and the signatures they produce.

The package is also callable: ``memsig.probe(model, data, ...)`` is
:func:`memsig.api.probe`, so the short form reads as it should.
"""

import sys
import types
from typing import Any

from memsig.probe.multihead import MultiHeadProbe
from memsig.probe.probes import MLPProbe, Probe, RidgeProbe, make_probe
from memsig.probe.signature import Signature

__all__ = ["MLPProbe", "MultiHeadProbe", "Probe", "RidgeProbe", "Signature", "make_probe"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Signature:
        from memsig.api import probe

        return probe(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
