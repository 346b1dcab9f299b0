"""The pretraining workflow behind `python -m xlm_jax.train` (layer 2: imports the training core, models, data and
core only).

    config   TrainConfig and its sections (YAML + key=value, through xlm_jax.training.settings)
    data     the preprocessed data (prepared into the cache on first use) and what the run derives from it
    adapt    starting from a published checkpoint (model.init_from, data.tokenizer) and train.trainable
    setup    everything before the first step, as one `Run` (resume checks, the run's files, the summary)
    loop     `train`: set-up, the steps, the edges (logging, evaluation, checkpoints, signals)
"""
