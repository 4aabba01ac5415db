"""gankit's trainer: runs inside the training container (or on your machine).

It is also the lower layer the launcher builds on. These modules are the shared plumbing, one job each,
light to import (no TensorFlow, JAX or Keras), and used by both sides; nothing else should do their jobs:

    trainer.layout           the run layout: every dataset/run/checkpoint/output path under a bucket or folder
    trainer.s3               S3 transfers (retries, multipart, progress, one-line failures)
    trainer.run_storage      a run's local-or-S3 data, output and checkpoint folders, kept in step with S3
    trainer.dataset_staging  a dataset's files put under an S3 prefix (or a local stand-in) once, with a manifest
    trainer.fsutil           local files: atomic writes (`atomic_file`, `atomic_write_bytes/text`, `atomic_dir`),
                             the cache folder, remote names checked before they become paths (`inside`)
    trainer.progress         progress lines for long work, on a terminal and in a log
    trainer.errors           the one-line errors (`GankitError`, `UsageError`) and the CLIs' `run_cli`
    trainer.aws              which AWS region (`region`, with the one-line no-region error)

and, below, the one TensorFlow pin.
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
