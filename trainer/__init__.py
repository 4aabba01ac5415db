"""gankit's trainer: runs inside the training container (or on your machine).

Kept free of heavy imports so `import trainer.layout` stays fast for the launcher.
"""

__version__ = "0.1.0"

# The one TensorFlow pin: the release gankit is built and tested with (the image's base, SageMaker's
# prebuilt container, constraints.txt) and the range the trainer accepts (Keras 3 arrived in 2.16).
# pyproject.toml and docker/Dockerfile cannot import it: `launcher image push` passes it to the
# Dockerfile, and tests/test_code_shape.py checks that both say the same.
TENSORFLOW = "2.21.0"
TENSORFLOW_MINOR = TENSORFLOW.rsplit(".", 1)[0]  # "2.21": how SageMaker names its prebuilt images
TENSORFLOW_RANGE = f">=2.16,<{TENSORFLOW_MINOR.split('.')[0]}.{int(TENSORFLOW_MINOR.split('.')[1]) + 1}"


def load_generator(path):
    """Load an exported generator folder; see `trainer.export.Generator`."""
    from trainer.export import load_generator as _load

    return _load(path)
