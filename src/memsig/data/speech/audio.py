"""Reading audio files as mono float waveforms, with errors that name the file and the fix.

Audio is read with :mod:`soundfile` (WAV, FLAC, OGG...), not ``torchaudio.load``, whose
backend in torchaudio 2.9+ needs TorchCodec and FFmpeg.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import torch
from torch import Tensor

from memsig.data.io import CorpusError
from memsig.data.speech.backend import torchaudio

SILENCE_PEAK = 1e-4  # a file whose largest |sample| is below this is silent


class AudioError(CorpusError):
    """An audio file is missing, unreadable, empty, silent or at the wrong sample rate."""


def read_audio(path: str | Path, sample_rate: int = 16000, resample: bool = True) -> Tensor:
    """The waveform of an audio file, mono (channels averaged), at ``sample_rate``.

    Args:
        path: the audio file.
        sample_rate: the rate wanted, in Hz.
        resample: resample a file at another rate (``torchaudio.functional.resample``);
            ``False`` raises instead.

    Returns:
        ``[S]`` float32 samples in [-1, 1].

    Raises:
        AudioError: the file is missing, cannot be decoded, has no samples, is silent
            (peak below :data:`SILENCE_PEAK`) or has another rate and ``resample`` is off.
    """
    path = Path(path)
    drop = "or drop it from the corpus (data.on_bad_audio=skip)"
    if not path.is_file():
        raise AudioError(
            f"audio file {path} does not exist; check the corpus/manifest paths "
            f"(relative manifest paths are relative to the manifest's folder) {drop}"
        )
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"audio file {path} cannot be decoded ({err}); re-create or re-download it {drop}") from None
    wave = torch.from_numpy(data).mean(dim=1)
    if wave.numel() == 0:
        raise AudioError(f"audio file {path} has no samples; re-create it {drop}")
    peak = float(wave.abs().max())
    if peak < SILENCE_PEAK:
        raise AudioError(
            f"audio file {path} is silent (peak {peak:.1e} < {SILENCE_PEAK:g}); check the recording {drop}"
        )
    if rate != sample_rate:
        if not resample:
            raise AudioError(
                f"audio file {path} has sample rate {rate} Hz, expected {sample_rate} Hz; convert it "
                f"(e.g. `sox {path.name} -r {sample_rate} out.wav`), allow resampling, {drop}"
            )
        wave = torchaudio("functional").resample(wave, rate, sample_rate)
    return wave
