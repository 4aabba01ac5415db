"""gankit's trainer: runs inside the training container (or on your machine).

Kept free of heavy imports so `import trainer.layout` stays fast for the launcher.
"""

__version__ = "0.1.0"


def load_generator(path):
    """Load an exported generator folder; see `trainer.export.Generator`."""
    from trainer.export import load_generator as _load

    return _load(path)
