"""Workflows (layer 2): fine-tuning (`finetune`), task evaluation, retrieval, Tatoeba and BUCC (`evaluate`), and
what loading a fine-tuned checkpoint needs (`loading`). The `python -m xlm_jax.finetune` / `xlm_jax.evaluate`
commands and the notebook API (`xlm_jax.api`) call them."""
