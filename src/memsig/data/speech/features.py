"""Acoustic features: log-mel filterbanks and SpecAugment masking."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from memsig.data.speech.backend import torchaudio


class LogMel(nn.Module):
    """Log-mel filterbank energies of one waveform.

    Frames of ``win_ms`` every ``hop_ms`` (centred, reflect-padded), an FFT of ``n_fft``
    points (default: the next power of two of the window length), the power spectrum
    through ``n_mels`` triangular mel filters, then ``log(x + floor)``. With ``normalize``
    every mel bin is standardised over the utterance's frames (per-utterance mean and
    variance normalisation).

    Args:
        sample_rate: rate of the input waveform in Hz.
        n_mels: mel bins (the feature dimension).
        win_ms, hop_ms: window length and frame shift in milliseconds.
        n_fft: FFT size (at least the window length in samples).
        floor: added before the log (keeps silence finite).
        normalize: per-utterance mean/variance normalisation of each bin.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        floor: float = 1e-6,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.win_length = round(sample_rate * win_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        self.n_fft = n_fft or 2 ** math.ceil(math.log2(self.win_length))
        if self.n_fft < self.win_length or self.hop_length < 1:
            raise ValueError(
                f"LogMel: n_fft ({self.n_fft}) must be >= the window ({self.win_length} samples) and "
                f"hop_ms ({hop_ms}) must be at least one sample at {sample_rate} Hz"
            )
        self.floor, self.normalize = floor, normalize
        self.mel = torchaudio("transforms").MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            n_mels=n_mels,
        )

    @property
    def frame_rate(self) -> float:
        """Feature frames per second of audio."""
        return self.sample_rate / self.hop_length

    def frames(self, num_samples: int) -> int:
        """Number of feature frames ``T`` of a waveform of ``num_samples`` samples."""
        return 1 + num_samples // self.hop_length

    def forward(self, wave: Tensor) -> Tensor:
        """``[S]`` waveform -> ``[T, n_mels]`` log-mel features, ``T = frames(S)``."""
        if wave.dim() != 1:
            raise ValueError(f"LogMel expects one mono waveform [S]; got shape {tuple(wave.shape)}")
        feats = torch.log(self.mel(wave).T + self.floor)
        if self.normalize:
            mean, std = feats.mean(dim=0), feats.std(dim=0, unbiased=False)
            feats = (feats - mean) / (std + 1e-5)
        return feats


class SpecAugment(nn.Module):
    """SpecAugment frequency and time masking of one utterance's features (no time warping).

    ``freq_masks`` bands of ``f ~ U{0..freq_width}`` bins and ``time_masks`` spans of
    ``t ~ U{0..min(time_width, max_time_ratio * T)}`` frames are set to the utterance's mean
    feature value (0 for normalised features). Widths and positions come from torch's
    global random generator. Does nothing in eval mode.

    Args:
        freq_masks, freq_width: number of frequency masks and their largest width (bins).
        time_masks, time_width: number of time masks and their largest width (frames).
        max_time_ratio: a time mask covers at most this share of the utterance's frames.
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 15,
        time_masks: int = 2,
        time_width: int = 40,
        max_time_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.max_time_ratio = max_time_ratio

    def forward(self, feats: Tensor) -> Tensor:
        """``[T, F]`` features -> ``[T, F]`` masked copy (the input itself in eval mode)."""
        if not self.training:
            return feats
        out = feats.clone()
        fill = feats.mean()
        n_frames, n_bins = feats.shape
        time_width = min(self.time_width, int(self.max_time_ratio * n_frames))
        for dim, count, width, size in (
            (1, self.freq_masks, self.freq_width, n_bins),
            (0, self.time_masks, time_width, n_frames),
        ):
            for _ in range(count):
                w = int(torch.randint(0, min(width, size) + 1, ()))
                start = int(torch.randint(0, size - w + 1, ()))
                out.narrow(dim, start, w).fill_(fill)
        return out
