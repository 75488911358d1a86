"""Distillation of self-supervised encoders into small students (DistilHuBERT's recipe), the
route arXiv 2505.13270 takes to a speech+music encoder: students that start from one shared
initialisation, whose task vectors are then merged; or one student of several teachers.

python -m distill recipe=demo_speech
"""
