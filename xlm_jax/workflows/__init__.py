"""Workflows (layer 2): fine-tuning (`finetune`), task evaluation, retrieval, Tatoeba and BUCC (`evaluate`),
checkpoint conversion between formats (`convert`), and what loading a fine-tuned checkpoint needs (`loading`).
The `python -m xlm_jax.finetune` / `.evaluate` / `.convert` commands and the notebook API (`xlm_jax.api`) call
them."""
