"""Machine-translation training (`python -m xlm_jax.train_mt`): config, data (token-budget batches), loop
(supervised MT, denoising auto-encoding, online back-translation). A workflow package, beside `pretrain`."""
