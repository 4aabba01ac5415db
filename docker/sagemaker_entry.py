"""Script-mode entry point for AWS's prebuilt TensorFlow training image.

The launcher puts this file at the root of the source tarball beside the
`trainer` package; SageMaker's training toolkit runs it as `sagemaker_program`.
"""

from trainer.contract import main

main()
