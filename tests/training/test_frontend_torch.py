"""The exportable torch front-end (Conv1d DFT) and the FFT path equal the reference."""

import numpy as np
import pytest
import torch

from animalclap_edge.contracts.frontend import CLAP_UNFUSED, log_mel_reference, repeat_pad
from training.frontend import LogMelFrontend, frontend_from_feature_extractor, repeat_pad_torch

# fp32 against the float64 reference on real audio. fp32 rounding is relative to the
# frame's loudest component, so bins 90 dB below it carry larger dB error.
# Measured on 60 clips of shared/realaudio (2026-11-25): within 60 dB of the peak
# <= 0.0009 dB; everywhere, down to the -100 dB floor, <= 0.037 (dft) / 0.071 (fft).
MAX_DB_DIFF_LOUD = 0.005  # bins within 60 dB of the window's peak
MAX_DB_DIFF_ANY = 0.1  # every bin, including the floor


def _real_windows(realaudio, n=12):
    from animalclap_edge.audio.decode import read_all

    out = []
    for p in sorted(realaudio.iterdir())[::9]:
        if p.suffix not in (".wav", ".ogg"):
            continue
        x = read_all(p, 48000)
        if len(x) >= 4800:
            out.append(repeat_pad(x, 144000))
        if len(out) == n:
            break
    return np.stack(out)


@pytest.mark.parametrize("mode", ["dft", "fft"])
def test_torch_frontend_matches_reference_on_real_audio(realaudio, mode):
    x = _real_windows(realaudio)
    padded = np.stack([repeat_pad(w, CLAP_UNFUSED.clip_samples) for w in x])
    with torch.no_grad():
        got = LogMelFrontend(CLAP_UNFUSED, mode=mode)(torch.from_numpy(padded)).numpy()
    for g, w in zip(got, padded, strict=True):
        ref = log_mel_reference(w)
        assert g.shape == ref.shape
        diff = np.abs(g - ref)
        assert diff[ref > ref.max() - 60].max() < MAX_DB_DIFF_LOUD
        assert diff.max() < MAX_DB_DIFF_ANY


@pytest.mark.parametrize("mode", ["dft", "fft"])
def test_the_frontend_stays_fp32_under_bf16_autocast(realaudio, mode):
    """Training runs under autocast; the exported graph computes the mel in fp32."""
    x = torch.from_numpy(_real_windows(realaudio, n=3))
    fe = LogMelFrontend(CLAP_UNFUSED, mode=mode)
    with torch.no_grad():
        plain = fe(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under = fe(x)
            assert torch.is_autocast_enabled("cpu")  # left as it was found
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, plain, rtol=0, atol=0)


def test_repeat_pad_torch_equals_numpy():
    x = np.random.default_rng(0).standard_normal((2, 7)).astype(np.float32)
    got = repeat_pad_torch(torch.from_numpy(x), 30).numpy()
    assert np.array_equal(got, np.stack([repeat_pad(r, 30) for r in x]))


def test_dft_basis_keeps_only_mel_bins_and_counts_macs():
    fe = LogMelFrontend()
    assert fe.dft_basis.shape[0] == 2 * (fe.hi - fe.lo) < 2 * CLAP_UNFUSED.n_freqs
    # 10 s clip: ~0.63 GMAC with the cropped basis vs ~1.05 for all 513 bins.
    assert 0.5e9 < fe.macs(480000) < 0.7e9


def test_reads_checkpoint_feature_extractor_and_refuses_fusion():
    from transformers import ClapFeatureExtractor

    fe = ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="rand_trunc")
    assert frontend_from_feature_extractor(fe) == CLAP_UNFUSED
    with pytest.raises(ValueError, match="fusion"):
        frontend_from_feature_extractor(ClapFeatureExtractor())  # class default is fusion


@pytest.mark.slow
def test_the_autocast_switch_compiles_without_a_graph_break():
    """Training compiles the front-end under bf16 autocast: one graph, same output."""
    torch._dynamo.reset()
    # reset() keeps the counters: after another compile in this process they held its
    # graphs too, and this test failed whenever it ran after test_compile.py
    torch._dynamo.utils.counters.clear()
    fe = LogMelFrontend(CLAP_UNFUSED, mode="fft")
    x = torch.randn(2, 48_000)
    compiled = torch.compile(fe)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = compiled(x), fe(x)
    counters = torch._dynamo.utils.counters
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] == 1
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
