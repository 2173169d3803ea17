"""hydraguard: protect an LLM API against model-extraction (distillation) campaigns."""

__version__ = "0.1.0"
