"""The network of each model family: :data:`NETWORKS` maps a Hugging Face config's ``model_type`` to
the :class:`~memsig.models.hf.base.HFNet` that runs it and reads its states.

``gpt2`` (:class:`~memsig.models.hf.transformer.Transformer`)
    ``layer{l}.residual``: the residual stream after block l. No recurrent state: each window is
    its own context, so a position's history is what precedes it in the window.
``mamba`` (:class:`~memsig.models.hf.mamba.Mamba`)
    ``layer{l}.residual`` and ``layer{l}.ssm``, the selective SSM's state; carried from window to
    window.
``rwkv`` (:class:`~memsig.models.hf.rwkv.Rwkv`)
    ``layer{l}.residual``, ``layer{l}.wkv_num`` and ``wkv_den`` (the WKV numerator and denominator)
    and ``layer{l}.shift`` (the token shift); carried from window to window.
``recurrent_gemma`` (:class:`~memsig.models.hf.griffin.Griffin`, recurrent blocks only)
    ``layer{l}.residual`` and ``layer{l}.rglru``, the RG-LRU state; carried from window to window.
``xlstm`` (:class:`~memsig.models.hf.xlstm.XLSTM`)
    ``layer{l}.residual``, ``layer{l}.C`` (the matrix memory) and ``layer{l}.n`` (the normaliser);
    carried from window to window.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig

from memsig.models.hf.base import HFNet
from memsig.models.hf.griffin import Griffin
from memsig.models.hf.mamba import Mamba
from memsig.models.hf.rwkv import Rwkv
from memsig.models.hf.transformer import Transformer
from memsig.models.hf.xlstm import XLSTM

NETWORKS: dict[str, type[HFNet]] = {
    "gpt2": Transformer,
    "mamba": Mamba,
    "rwkv": Rwkv,
    "recurrent_gemma": Griffin,
    "xlstm": XLSTM,
}


def build_network(model_type: str, **options: Any) -> HFNet:
    """The network for a config of ``model_type`` with ``options`` (e.g. ``hidden_size``), fresh weights."""
    if model_type not in NETWORKS:
        raise ValueError(
            f"model.config.model_type={model_type!r} has no memsig network (its states are read per family); "
            f"choose one of {', '.join(sorted(NETWORKS))}, or add a network in memsig/models/hf/"
        )
    defaults = AutoConfig.for_model(model_type)
    unknown = sorted(set(options) - set(defaults.to_dict()) - set(defaults.attribute_map))
    if unknown:
        raise ValueError(
            f"model.config has no option {', '.join(map(repr, unknown))} for model_type={model_type!r} (a typo?); "
            f"the {type(defaults).__name__} options are listed by its to_dict()"
        )
    return NETWORKS[model_type](AutoConfig.for_model(model_type, **options))
