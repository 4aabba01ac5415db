"""Code that runs on the instances themselves (started by their user data): the EC2 job runner and Jupyter's units.

Only the standard library, boto3 and the trainer's light plumbing (no TensorFlow or JAX) here: these modules run
in the DLAMI's Python before anything else of ours is known to work there.
"""
