"""Workflows: fine-tuning, evaluation, and checkpoint conversion / loading (`convert`)."""
