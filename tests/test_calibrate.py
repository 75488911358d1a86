import numpy as np
import pytest
import torch

from merging.audio import Clip, synthetic_clips
from merging.calibrate import CrossMoments, cached_calibrate, calibrate, merge_points
from tests.helpers import random_encoder, tiny_config


def test_moments_match_numpy_pearson_and_survive_constant_units():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=gen) * 3 + 10  # large means: cancellation-prone
    b = torch.randn(500, 5, generator=gen)
    b[:, 1] = a[:, 2] * 0.5 + 0.1 * b[:, 1]
    a[:, 4] = 7.0  # constant unit
    m = CrossMoments(6, 5)
    for chunk in torch.split(torch.arange(500), [1, 99, 250, 150]):
        m.update(a[chunk][None], b[chunk][None], [len(chunk)])
    stats = m.finalize()
    with np.errstate(invalid="ignore", divide="ignore"):  # numpy gives NaN for the constant unit
        expected = np.corrcoef(a.double().numpy().T, b.double().numpy().T)[:6, 6:]
    live = [0, 1, 2, 3, 5]
    np.testing.assert_allclose(stats.corr.numpy()[live], expected[live], atol=1e-5)
    assert torch.isfinite(stats.corr).all()
    assert (stats.corr[4] == 0).all()
    np.testing.assert_allclose(stats.mean_a.numpy(), a.double().mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(
        stats.std_b.numpy(), b.double().std(0, unbiased=False).numpy(), atol=1e-6
    )


def clips_of_varied_length(n=5, seed=0):
    base = synthetic_clips(n, 16000, 0.6, seed)
    return [Clip(c.name, c.wave[: 4000 + 1100 * i]) for i, c in enumerate(base)]


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_statistics_do_not_depend_on_batching_or_padding(norm):
    config = tiny_config(feat_extract_norm=norm)
    a, b = random_encoder(config, 0), random_encoder(config, 1)
    clips = clips_of_varied_length()
    one = calibrate(a, b, clips, batch_size=1, progress=False)
    many = calibrate(a, b, clips, batch_size=3, progress=False)
    assert set(one) == {p.name for p in merge_points(config)}
    for name in one:
        assert one[name].n == many[name].n
        # float32 forward noise only; a padding leak shows up as differences of ~1e-1
        torch.testing.assert_close(one[name].corr, many[name].corr, atol=1e-3, rtol=0)
        torch.testing.assert_close(one[name].mean_a, many[name].mean_a, atol=1e-5, rtol=1e-5)


def test_statistics_come_from_the_cache_second_time(tmp_path):
    config = tiny_config()
    a, b = random_encoder(config, 0), random_encoder(config, 1)
    clips = clips_of_varied_length(3)
    first, hit1 = cached_calibrate(a, b, clips, tmp_path, batch_size=2, progress=False)
    second, hit2 = cached_calibrate(a, b, clips, tmp_path, batch_size=3, progress=False)
    assert (hit1, hit2) == (False, True)
    assert len(list((tmp_path / "calibration").glob("*.pt"))) == 1
    for name in first:
        assert torch.equal(first[name].corr, second[name].corr)
    # other clips, or other weights, are other keys
    _, hit3 = cached_calibrate(a, b, clips[:2], tmp_path, progress=False)
    _, hit4 = cached_calibrate(b, a, clips, tmp_path, progress=False)
    assert (hit3, hit4) == (False, False)


def test_damaged_cache_file_is_recomputed(tmp_path):
    config = tiny_config()
    a, b = random_encoder(config, 0), random_encoder(config, 1)
    clips = clips_of_varied_length(2)
    cached_calibrate(a, b, clips, tmp_path, progress=False)
    (path,) = (tmp_path / "calibration").glob("*.pt")
    path.write_bytes(b"garbage")
    stats, hit = cached_calibrate(a, b, clips, tmp_path, progress=False)
    assert not hit and "conv.0" in stats
