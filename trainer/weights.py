"""The networks' variables as plain numpy arrays: a checkpoint's payload, the same on both backends."""

import hashlib

import numpy as np

from trainer.errors import UsageError


def arrays_of(groups: dict) -> dict:
    """Every variable as a numpy array, named group/index."""
    from keras import ops

    return {f"{name}/{i:04d}": np.asarray(ops.convert_to_numpy(v.value)) for name, variables in groups.items()
            for i, v in enumerate(variables)}


def load_arrays(groups: dict, arrays: dict, where):
    """Assign a checkpoint's arrays to the variables, or fail in one line if they are another network's."""
    expected = {f"{name}/{i:04d}": v for name, variables in groups.items() for i, v in enumerate(variables)}
    mismatch = sorted(set(expected) ^ set(arrays)) or [k for k, v in expected.items() if tuple(v.shape) != arrays[k].shape]
    if mismatch:
        raise UsageError(f"checkpoint {where} holds other networks than this run builds (first difference: "
                         f"{mismatch[0]}); resume with the same options, or use another --checkpoint-dir")
    for key, variable in expected.items():
        variable.assign(arrays[key].astype(variable.dtype))


def weights_fingerprint(model) -> str:
    """A short digest of a model's weights: equal on every worker of a synchronous run."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]
