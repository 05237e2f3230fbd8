"""Which encoder frame speaks which grapheme: the alignment behind encoder signatures.

Encoder states live on frames, graphemes on characters. For each grapheme of a transcript
we find the *centre* of the audio span that speaks it, in units of input feature frames,
then read every encoder layer at the frame of its own rate that holds that centre: one
frame per grapheme, so long graphemes do not dominate a signature.

Two sources of the span:

* ``ctc`` — forced alignment (``torchaudio.functional.forced_align``) of the transcript on
  the CTC head's log-probabilities. Exact for the transcript, needs the CTC head on a layer
  with at least as many frames as graphemes (plus one per repeated pair).
* ``attention`` — the argmax of the speller's attention weights at the step that emits the
  grapheme (under teacher forcing), on the listener's last layer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from memsig.data.speech.backend import torchaudio


def ctc_centres(
    log_probs: Tensor, lengths: Tensor, tokens: Tensor, token_lengths: Tensor, blank: int, reduction: int
) -> tuple[Tensor, Tensor]:
    """Grapheme centres by CTC forced alignment.

    Args:
        log_probs: ``[B, T, C]`` CTC log-probabilities; lengths: ``[B]`` valid frames.
        tokens: ``[B, L]`` transcript ids; token_lengths: ``[B]``.
        reduction: input frames per CTC frame.

    Returns:
        ``centres [B, L]`` in input frames (NaN where not aligned) and ``aligned [B]`` bool:
        False where the utterance has fewer CTC frames than its alignment needs.
    """
    b, length = tokens.shape
    centres = torch.full((b, length), float("nan"))
    aligned = torch.zeros(b, dtype=torch.bool)
    lp = log_probs.detach().float().cpu()
    AF = torchaudio("functional")
    for i in range(b):
        n, m = int(lengths[i]), int(token_lengths[i])
        seq = tokens[i, :m].cpu().int()
        repeats = int((seq[1:] == seq[:-1]).sum()) if m > 1 else 0
        if m == 0 or n < m + repeats:
            continue
        path, scores = AF.forced_align(lp[i : i + 1, :n], seq[None], blank=blank)
        spans = AF.merge_tokens(path[0], scores[0].exp(), blank=blank)
        centres[i, :m] = torch.tensor([(s.start + s.end) / 2 for s in spans]) * reduction
        aligned[i] = True
    return centres, aligned


def attention_centres(weights: Tensor, token_lengths: Tensor, reduction: int) -> Tensor:
    """Grapheme centres from attention: ``weights [B, S, T]`` of the steps that emit grapheme
    0, 1, …; the centre of the most attended frame, in input frames. Returns ``[B, L]``
    (NaN past each transcript), L = ``token_lengths.max()``."""
    length = int(token_lengths.max())
    centres = (weights[:, :length].argmax(-1).float() + 0.5) * reduction
    past = torch.arange(length, device=centres.device)[None] >= token_lengths.to(centres.device)[:, None]
    return centres.cpu().masked_fill(past.cpu(), float("nan"))


def frames_at(centres: Tensor, reduction: int, lengths: Tensor) -> Tensor:
    """The frame of a layer with ``reduction`` input frames per frame and ``lengths [B]`` that
    holds each centre ``[B, L]`` (NaN centres map to frame 0; mask them)."""
    idx = torch.nan_to_num(centres, nan=0.0).div(reduction).floor().long()
    return idx.clamp(min=0).minimum(lengths.cpu()[:, None] - 1)
