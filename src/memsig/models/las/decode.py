"""Decoding: greedy and beam search for the speller, greedy for the CTC head.

Every decoder caps its output length per utterance (``max_len``), so an unaligned model
that loops on a frequent phrase stops instead of crawling to the end of evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from memsig.models.las.speller import Speller


def _until_eos(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos)] if eos in row else row


@torch.no_grad()
def greedy(speller: Speller, memory: Tensor, lengths: Tensor, max_len: Tensor) -> list[list[int]]:
    """Most probable grapheme at every step, batched.

    Args:
        memory: ``[B, T, K]`` listener frames; lengths: ``[B]``.
        max_len: ``[B]`` the most graphemes emitted per utterance.

    Returns:
        Grapheme ids per utterance (without ``<eos>``).
    """
    eos = speller.num_classes - 1
    state = speller.start(memory, lengths)
    prev = torch.full((memory.shape[0],), speller.sos, dtype=torch.long, device=memory.device)
    done = torch.zeros_like(prev, dtype=torch.bool)
    steps = []
    cap = max_len.to(memory.device)
    for i in range(int(cap.max())):
        logits, state, _ = speller.step(prev, state)
        y = logits.argmax(-1)
        y = torch.where(done | (i >= cap), torch.full_like(y, eos), y)
        steps.append(y)
        done |= y == eos
        if bool(done.all()):
            break
        prev = y.clamp(max=eos - 1)
    rows = torch.stack(steps, 1).tolist() if steps else [[] for _ in range(len(prev))]
    return [_until_eos(r, eos) for r in rows]


@torch.no_grad()
def beam_search(
    speller: Speller, memory: Tensor, lengths: Tensor, max_len: Tensor, beam: int = 4, length_norm: float = 1.0
) -> list[list[int]]:
    """Beam search, one utterance at a time (the hypotheses of one utterance form a batch).

    Finished hypotheses are scored by ``log p / len^length_norm``; the search stops when
    ``beam`` hypotheses have finished or at ``max_len``.

    Args:
        memory, lengths, max_len: as in :func:`greedy`.
        beam: hypotheses kept per step.
    """
    eos = speller.num_classes - 1
    results = []
    for b in range(memory.shape[0]):
        state = speller.start(memory[b : b + 1], lengths[b : b + 1])
        hyps: list[list[int]] = [[]]
        scores = memory.new_zeros(1)
        finished: list[tuple[float, list[int]]] = []
        cap = int(max_len[b])
        for i in range(cap + 1):
            prev = torch.tensor([h[-1] if h else speller.sos for h in hyps], device=memory.device)
            logits, state, _ = speller.step(prev, state)
            logp = F.log_softmax(logits, -1)
            if i == cap:  # at the cap only <eos> may follow
                logp = logp.masked_fill(torch.arange(logp.shape[1], device=logp.device) != eos, float("-inf"))
            top = (scores[:, None] + logp).flatten().topk(min(2 * beam, logp.numel()))
            keep, rows, new_scores = [], [], []
            for score, idx in zip(top.values.tolist(), top.indices.tolist()):
                h, c = divmod(idx, logp.shape[1])
                if c == eos:
                    finished.append((score / max(1, len(hyps[h]) + 1) ** length_norm, hyps[h]))
                elif len(keep) < beam:
                    keep.append(hyps[h] + [c])
                    rows.append(h)
                    new_scores.append(score)
            if len(finished) >= beam or not keep:
                break
            hyps = keep
            scores = memory.new_tensor(new_scores)
            state = state.select(torch.tensor(rows, device=memory.device))
        if not finished:
            finished = [(float(s) / max(1, len(h)) ** length_norm, h) for s, h in zip(scores.tolist(), hyps)]
        results.append(max(finished, key=lambda x: x[0])[1])
    return results


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank: int) -> list[list[int]]:
    """Best path of a CTC head: argmax per frame, repeats merged, blanks removed.

    Args:
        log_probs: ``[B, T, C]``; lengths: ``[B]`` valid frames.
    """
    best = log_probs.argmax(-1)
    out = []
    for row, n in zip(best.tolist(), lengths.tolist()):
        seq, last = [], None
        for c in row[:n]:
            if c != last and c != blank:
                seq.append(c)
            last = c
        out.append(seq)
    return out
