"""factory: prompt templates and a teacher LLM in, clean fine-tuning datasets out."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported when first used: `python -m factory` and `import factory` stay light.
    if name == "Pipeline":
        from factory.api import Pipeline

        return Pipeline
    raise AttributeError(f"module 'factory' has no attribute {name!r}")


__all__ = ["Pipeline", "__version__"]
