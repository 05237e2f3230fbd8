"""The one training loader of every DataModule: it resumes in the middle of a pass, exactly.

:class:`ResumableLoader` hands out whole batches (dataset items) in order or shuffled, and its
``state_dict`` records the epoch, the batches handed out, the pass's order and torch's random
state. :class:`ResumableTraining` gives a DataModule the hooks that carry that state through a
checkpoint, so a run killed mid-epoch resumes with the next batch, the same order and the same
random numbers (dropout, SpecAugment) as a run that never stopped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class _PassOrder(Sampler[int]):
    """The items of one pass over a dataset from position ``start``, in order or shuffled.

    Lightning calls ``set_epoch`` before every training epoch; :class:`ResumableLoader`
    sets ``order`` (``None``: 0..n-1) and ``start`` before each pass. ``len`` is always the
    whole pass, so Lightning's batch count for a resumed epoch stays right.
    """

    def __init__(self, n: int, shuffle: bool) -> None:
        self.n, self.shuffle = n, shuffle
        self.epoch = 0
        self.order: list[int] | None = None
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter((range(self.n) if self.order is None else self.order)[self.start :])


def _rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class ResumableLoader(DataLoader):
    """A loader of whole batches (dataset items) that can resume in the middle of a pass.

    Lightning saves a training loader's ``state_dict()`` in every checkpoint and, when a fit
    resumes mid-epoch, calls ``load_state_dict()`` before the first pass (:class:`ResumableTraining`
    keeps a copy that is restored at any resume). The state is the epoch, the number of
    batches handed out in it, the pass's order (``shuffle``) and torch's random state (CPU
    and current CUDA device). A resumed pass of the same epoch skips the batches already
    trained on and sets the random state back to what it was when the checkpoint was taken,
    so dropout masks and later shuffles are those of an uninterrupted run. A checkpoint
    taken at the end of an epoch resumes with a fresh pass (new order) of the next one.

    Args:
        dataset: a map-style dataset whose items are batches.
        shuffle: a new random order for every pass: from torch's global generator, or with
            ``seed`` from a generator seeded by (``seed``, epoch), whatever else draws numbers.
        seed: see ``shuffle``.
        kwargs: passed to :class:`~torch.utils.data.DataLoader` (not batch_size/sampler).
    """

    def __init__(self, dataset: Dataset, shuffle: bool = False, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, sampler=_PassOrder(len(dataset), shuffle), **kwargs)  # type: ignore[arg-type]
        self.seed = seed
        self._position = 0  # batches of the current pass handed out
        self._resume: dict[str, Any] | None = None

    def __iter__(self):  # a generator: the pass is set up at the first next(), after set_epoch
        order: _PassOrder = self.sampler  # type: ignore[assignment]
        resume, self._resume = self._resume, None
        mid_pass = (
            resume is not None
            and resume["epoch"] == order.epoch
            and 0 < resume["position"] < order.n
            and (resume["order"] is None or len(resume["order"]) == order.n)
        )
        if mid_pass:
            order.order, order.start = resume["order"], resume["position"]  # type: ignore[index]
        else:
            if resume is not None:
                _set_rng_state(resume["rng"])  # as it was when the epoch before ended
            order.order = (
                torch.randperm(order.n, generator=self._generator(order.epoch)).tolist() if order.shuffle else None
            )
            order.start = 0
        self._position = order.start
        batches = super().__iter__()
        if mid_pass:
            _set_rng_state(resume["rng"])  # type: ignore[index]  # as after the last batch trained on
        for batch in batches:
            self._position += 1
            yield batch

    def _generator(self, epoch: int) -> torch.Generator | None:
        """The shuffle's generator for ``epoch``: None (torch's global one) without a seed."""
        return None if self.seed is None else torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def state_dict(self) -> dict[str, Any]:
        order: _PassOrder = self.sampler  # type: ignore[assignment]
        return {"epoch": order.epoch, "position": self._position, "order": order.order, "rng": _rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict)


class ResumableTraining:
    """DataModule hooks: the training loader's state in every checkpoint, restored at any resume.

    Lightning restores a training loader's own state only when a fit resumes mid-epoch. This
    copy (always restored) also sets the random state back when it resumes at the end of an
    epoch, so the next epoch's dropout masks and order are an uninterrupted run's. The
    DataModule builds its training loader with :meth:`resumable_loader`.
    """

    trainer: Any
    _train_loader: ResumableLoader | None = None
    _train_resume: dict[str, Any] | None = None

    def resumable_loader(
        self, dataset: Dataset, shuffle: bool, seed: int | None = None, **kwargs: Any
    ) -> ResumableLoader:
        """The training loader over ``dataset``, set to resume where a restored checkpoint stopped."""
        loader = ResumableLoader(dataset, shuffle=shuffle, seed=seed, **kwargs)
        if self._train_resume is not None:
            loader.load_state_dict(self._train_resume)
            self._train_resume = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        fitting = self.trainer is None or self.trainer.state.fn == "fit"
        self._train_resume = state_dict.get("train_loader") if fitting else None
