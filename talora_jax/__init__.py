"""TA-LoRA: multi-task prompt tuning over a frozen T5, in JAX/Flax."""
