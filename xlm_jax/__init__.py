"""xlm_jax: XLM and XLM-R in JAX/Flax."""

from xlm_jax.models.config import ModelConfig, NAMED_CONFIGS, get_model_config
from xlm_jax.core.errors import UserError

__all__ = ["ModelConfig", "NAMED_CONFIGS", "get_model_config", "UserError", "load", "Tokenizer"]


def __getattr__(name):
    # Lazy: `import xlm_jax` stays cheap, and the notebook API is `xlm_jax.load(path)`.
    if name == "load":
        from xlm_jax.api import load

        return load
    if name == "Tokenizer":
        from xlm_jax.data.tokenizer import Tokenizer

        return Tokenizer
    raise AttributeError(f"module 'xlm_jax' has no attribute {name!r}")
