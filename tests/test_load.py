import json

import pytest
import torch
from transformers import HubertModel, Wav2Vec2FeatureExtractor

from merging.load import EncoderLoadError, check_mergeable, load_encoder
from merging.merge import export
from tests.helpers import random_encoder, tiny_config


def test_round_trip_through_export_keeps_weights_and_preprocessing(tmp_path):
    enc = random_encoder(tiny_config(), 0)
    enc.normalize = True
    export(enc, tmp_path / "ckpt")
    loaded = load_encoder(tmp_path / "ckpt")
    assert loaded.normalize and loaded.sample_rate == 16000
    for k, v in enc.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    # what s3prl's hf_hubert_custom upstream does: plain transformers classes, offline
    HubertModel.from_pretrained(tmp_path / "ckpt", local_files_only=True)
    fe = Wav2Vec2FeatureExtractor.from_pretrained(tmp_path / "ckpt", local_files_only=True)
    assert fe.sampling_rate == 16000 and fe.do_normalize


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderLoadError, match="does not exist"):
        load_encoder(tmp_path / "nope")
    with pytest.raises(EncoderLoadError, match="does not exist"):
        load_encoder("./relative/missing")


def test_hub_id_offline_says_so_and_suggests_a_local_path():
    with pytest.raises(EncoderLoadError, match="offline.*local directory"):
        load_encoder("someone/not-cached-anywhere")


def test_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(EncoderLoadError, match="no config.json"):
        load_encoder(tmp_path / "x")


def test_architecture_mismatch_names_every_differing_field():
    a = random_encoder(tiny_config(), 0)
    b = random_encoder(tiny_config(intermediate_size=40, num_attention_heads=2), 1)
    with pytest.raises(EncoderLoadError) as err:
        check_mergeable(a, b)
    msg = str(err.value)
    assert "intermediate_size: 48 vs 40" in msg and "num_attention_heads: 4 vs 2" in msg
    assert "hidden_size" not in msg
    c = random_encoder(tiny_config(), 2, rate=24000)
    with pytest.raises(EncoderLoadError, match="sample_rate: 16000 vs 24000"):
        check_mergeable(a, c)


def test_mert_v1_style_checkpoint_is_remapped(tmp_path):
    """MERT-v1 ships remote code: custom model_type, legacy weight-norm names, a CQT branch."""
    enc = random_encoder(tiny_config(), 0)
    state = {}
    for k, v in enc.model.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        state[k] = v.clone()
    state["feature_extractor_cqt.conv.weight"] = torch.zeros(3, 3)
    d = tmp_path / "mert"
    d.mkdir()
    torch.save(state, d / "pytorch_model.bin")
    config = enc.model.config.to_dict()
    config.update(
        model_type="mert_model",
        architectures=["MERTModel"],
        sample_rate=24000,
        feature_extractor_cqt=True,
    )
    (d / "config.json").write_text(json.dumps(config))
    loaded = load_encoder(d)
    assert loaded.sample_rate == 24000
    for k, v in enc.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k


def test_unmappable_checkpoint_lists_missing_keys(tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    torch.save({"something.else": torch.zeros(1)}, d / "pytorch_model.bin")
    config = tiny_config().to_dict()
    config["model_type"] = "mert_model"
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderLoadError, match="does not map onto HubertModel: missing"):
        load_encoder(d)
