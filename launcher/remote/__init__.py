"""Code that runs on the Jupyter instance itself (started by its user data).

Only the standard library and boto3 here: these modules run in the DLAMI's Python
before anything else of ours is known to work there.
"""
