"""`python -m xlm_jax.bench`: the same MLM training step in xlm_jax and in Hugging Face PyTorch, side by side.

What is compared, per configuration (model shape, vocabulary, sequence length, batch):
- jax: xlm_jax's real training step (`xlm_jax.training.step.make_train_step` with `xlm_jax.training.optim.make_optimizer`): dropout
  on, AdamW (betas 0.9/0.98, eps 1e-6, wd 0.01, linear warm-up/decay), global-norm clip 1.0, the LM head applied
  only at the P masked positions (no B x T x V logits), state donated.
- torch_eager: `transformers.XLMRobertaForMaskedLM` as users train it: logits at every position, loss with
  labels = -100 outside the masked positions, `torch.optim.AdamW(fused=True)` (the HF Trainer default on
  torch >= 2.8) with the same hyperparameters and decay mask, `clip_grad_norm_(1.0)`, a linear schedule, SDPA
  attention; bf16 autocast on GPU.
- torch_masked: the same HF model, weights, fused AdamW, clipping and schedule, but the LM head applied only at the
  masked positions, as fairseq and NVIDIA's BERT train: the encoder's hidden states are gathered at the P_real
  predicted positions of the batch (`index_select`), projected by the model's own `lm_head`, and the loss is the
  mean cross-entropy there (the same value as HF's labels = -100 loss). PyTorch doing the same work as jax.
- torch_compile: torch_eager with `torch.compile(model)` (skipped with --smoke / --torch-compile off; a compile
  failure is caught and reported).

The batch is the same for every side: full-length rows `<s> ... </s>` of uniform random ids, masked by
`xlm_jax.data.masking.mask_tokens` (15 %, 80/10/10). Both sides start from the same weights (the JAX
initialisation exported through `xlm_jax.models.hf_mapping`), and the eval-mode loss of both on that batch is reported
as a check that they compute the same function.

Method: each side runs in its own long-lived worker process (so host-RSS peaks do not mix), pinned to the same
CPU set with the same thread count (torch.set_num_threads(n); XLA sizes its pool from the affinity mask).
After warm-up the parent alternates the workers, `repeats` times `steps` steps each, and reports medians;
while one worker runs the other blocks on its pipe. Figures: tokens/s (B x T per step), step time, first-step
(compile / warm-up) time, peak memory (VmHWM of the worker on CPU; device peak on GPU), model TFLOP/s and MFU
from the analytic training FLOPs of the batch (`xlm_jax.training.flops.batch_work` / `throughput`, as the trainer reports
them: the LM head credited at the ~15 % predicted positions, the same useful work credited to both sides; HF's
extra full-vocabulary logits are not credited; MFU needs a known or declared peak, $XLM_JAX_PEAK_FLOPS),
inference (forward-only encode) throughput, and a breakdown of where the time goes (forward, forward + backward,
optimizer, LM head + loss share, and on the JAX side the cost of computing HF-style full logits).

`--varlen` measures inference instead, on variable-length batches (`workload.varlen_set`): one seeded set of
sentences (log-normal lengths: many short, a few long) encoded (a) padded to each batch's longest sentence and
(b) packed into full rows with segment ids (`xlm_jax.data.packing`; the model's packed path: no attention across
sentences, positions restarting), by the JAX worker, and padded by the PyTorch worker (the family's base model:
ModernBertModel / XLMRobertaModel, SDPA); the figure is real (non-pad) tokens/s. `cpu_xlmr_mmshape` is the XLM-R
family at `cpu_mmbert`'s shape for that comparison. Checks: per sentence, packed and padded hidden states agree
(largest |difference| reported), and both frameworks' mean |h| over the real tokens.

The package: `workload` (the configurations, the shared batch, the workers' timing helpers), `jax_side` and
`torch_side` (one worker class per framework; torch is imported only when a PyTorch worker is built), `harness`
(the worker processes and their JSON-lines protocol, the run settings, the alternation), `report` (the record, the
derived figures, the table, the plot) and `__main__` (the command).
"""
