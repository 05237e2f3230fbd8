"""memsig: memory signatures of recurrent networks (what history a state keeps).

import memsig
signature = memsig.probe("outputs/train/runs/<run>/checkpoints/last.ckpt", "my_text.txt")
"""

from memsig.resolvers import register_resolvers
from memsig.states import StateBatch, StateSource
from memsig.vocab import Vocab

register_resolvers()

from memsig import probe  # noqa: E402  (callable package: memsig.probe(model, data, ...))
from memsig.probe.signature import Signature  # noqa: E402

__all__ = ["Signature", "StateBatch", "StateSource", "Vocab", "probe"]
__version__ = "0.1.0"
