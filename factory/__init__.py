"""factory: prompt templates and a teacher LLM in, clean fine-tuning datasets out."""

__version__ = "0.1.0"
