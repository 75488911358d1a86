import numpy as np
import pytest
import torch
from transformers import HubertConfig

from merging.audio import Clip, synthetic_clips
from merging.calibrate import CrossMoments, cached_calibrate, calibrate, frame_steps
from merging.forward import conv_output_lengths
from merging.points import merge_points
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


@pytest.mark.parametrize(
    ("norm", "max_frame_rate"), [("group", None), ("layer", None), ("group", 1000)]
)
def test_statistics_do_not_depend_on_batching_or_padding(norm, max_frame_rate):
    config = tiny_config(feat_extract_norm=norm)
    a, b = random_encoder(config, 0), random_encoder(config, 1)
    clips = clips_of_varied_length()
    one = calibrate(a, b, clips, batch_size=1, progress=False, max_frame_rate=max_frame_rate)
    many = calibrate(a, b, clips, batch_size=3, progress=False, max_frame_rate=max_frame_rate)
    assert set(one) == {p.name for p in merge_points(config)}
    for name in one:
        assert one[name].n == many[name].n
        # float32 forward noise only; a padding leak shows up as differences of ~1e-1
        torch.testing.assert_close(one[name].corr, many[name].corr, atol=1e-3, rtol=0)
        torch.testing.assert_close(one[name].mean_a, many[name].mean_a, atol=1e-5, rtol=1e-5)


def test_frame_rate_cap_reads_every_kth_frame_of_fast_points_only():
    base = HubertConfig()  # 16 kHz: conv layers at 3200, 1600, ... 50 frames/s
    assert frame_steps(base, 16000, 400) == {0: 8, 1: 4, 2: 2, 3: 1, 4: 1, 5: 1, 6: 1, -1: 1}
    assert set(frame_steps(base, 16000, None).values()) == {1}
    assert frame_steps(base, 16000, 25)[-1] == 2  # the transformer too, if asked
    with pytest.raises(ValueError, match="max_frame_rate"):
        frame_steps(base, 16000, 0)

    config = tiny_config()  # conv layers at 3200, 1600, 800 frames/s
    a, b = random_encoder(config, 0), random_encoder(config, 1)
    clips = clips_of_varied_length(3)
    exact = calibrate(a, b, clips, batch_size=2, progress=False)
    capped = calibrate(a, b, clips, batch_size=2, progress=False, max_frame_rate=1000)
    lengths = conv_output_lengths(torch.tensor([c.wave.numel() for c in clips]), config)
    for layer, step in ((0, 4), (1, 2), (2, 1)):
        assert exact[f"conv.{layer}"].n == int(lengths[layer].sum())
        assert capped[f"conv.{layer}"].n == int((-(-lengths[layer] // step)).sum())
    assert torch.equal(capped["ffn.1"].corr, exact["ffn.1"].corr)  # 800 frames/s: untouched
    assert not torch.equal(capped["conv.0"].corr, exact["conv.0"].corr)
    # a few hundred frames still estimate the same correlations
    torch.testing.assert_close(capped["conv.0"].corr, exact["conv.0"].corr, atol=0.15, rtol=0)


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
    _, hit5 = cached_calibrate(a, b, clips, tmp_path, progress=False, max_frame_rate=1000)
    assert (hit3, hit4, hit5) == (False, False, False)


def test_damaged_cache_file_is_recomputed(tmp_path):
    config = tiny_config()
    a, b = random_encoder(config, 0), random_encoder(config, 1)
    clips = clips_of_varied_length(2)
    cached_calibrate(a, b, clips, tmp_path, progress=False)
    (path,) = (tmp_path / "calibration").glob("*.pt")
    path.write_bytes(b"garbage")
    stats, hit = cached_calibrate(a, b, clips, tmp_path, progress=False)
    assert not hit and "conv.0" in stats


def test_moments_stay_on_the_activations_device_and_come_back_to_the_cpu():
    """device=cuda without a GPU: on the meta device (shapes, no data) every running sum
    stays where the activations are, and a padded batch's mask is built there too."""
    a = torch.empty(2, 7, 5, device="meta")
    b = torch.empty(2, 7, 3, device="meta")
    moments = CrossMoments(5, 3, a.device)
    moments.update(a, b, [7, 4])
    sums = (moments.sum_a, moments.sq_b, moments.buffer, moments.ref_a)
    assert all(t.device.type == "meta" for t in sums)
    cpu = CrossMoments(5, 3)
    cpu.update(torch.randn(2, 7, 5), torch.randn(2, 7, 3), [7, 4])
    stats = cpu.finalize()
    assert all(t.device.type == "cpu" for t in (stats.corr, stats.mean_a, stats.std_b))


@pytest.mark.parametrize("workers", [0, 2])
def test_statistics_from_streamed_files_equal_those_of_clips_held_in_memory(tmp_path, workers):
    """Calibration reads its files a batch at a time (in worker processes): the same clips,
    the same batches, bit-identical statistics as decoding every clip first."""
    import dataclasses

    import soundfile as sf

    from merging.audio import calibration_clips

    rng = np.random.default_rng(0)
    for i in range(9):  # varied lengths and rates, and a silent file that is skipped
        rate = (16000, 22050, 8000)[i % 3]
        wave = 0.3 * rng.standard_normal(int(rate * (0.3 + 0.1 * i))).astype(np.float32)
        sf.write(tmp_path / f"c{i}.wav", wave if i != 4 else 0 * wave, rate)
    a, b = random_encoder(tiny_config(), 0), random_encoder(tiny_config(), 1)
    files, skipped = calibration_clips([tmp_path], 6, 16000, 0.8, 0, workers=workers)
    assert skipped == [str(tmp_path / "c4.wav")] and len(files) == 6
    assert all(c.held is None for c in files)
    held = [dataclasses.replace(c, held=c.wave) for c in files]  # decoded up front
    assert [c.samples for c in held] == [c.samples for c in files]
    streamed = calibrate(a, b, files, batch_size=4, progress=False, workers=workers)
    in_memory = calibrate(a, b, held, batch_size=4, progress=False)
    for name, stats in in_memory.items():
        for field in dataclasses.fields(stats):
            got, want = getattr(streamed[name], field.name), getattr(stats, field.name)
            assert torch.equal(got, want) if torch.is_tensor(want) else got == want
