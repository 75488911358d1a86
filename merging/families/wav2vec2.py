"""wav2vec 2.0 (``Wav2Vec2Model``): HuBERT's layout module for module, so HuBERT's spec and
calibration points apply unchanged; exported as ``model_type: wav2vec2`` (a pretraining or CTC
checkpoint loads too: transformers drops its heads)."""

from __future__ import annotations

from transformers import Wav2Vec2Config, Wav2Vec2Model

from merging.families import Family

FAMILY = Family("wav2vec2", Wav2Vec2Model, Wav2Vec2Config, s3prl_upstream="hf_wav2vec2_custom")
