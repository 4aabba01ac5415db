"""Every preset's networks on both Keras backends: build, run (training on and off), save and load.

Each backend runs in its own process (KERAS_BACKEND is fixed at import). The
spectral-norm discriminator is the new part: Keras' stock SpectralNormalization
must behave on TensorFlow and on JAX, and the exported generator must load
without custom objects, on the other backend too.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

SCRIPT = r"""
import json, sys
import numpy as np
import keras
from keras import ops
from trainer.config import PRESETS
from trainer.models import build_discriminator, build_generator

out, report = sys.argv[1], {}
for shape, classes in (((28, 28, 1), 10), ((64, 64, 3), 0)):
    for preset in PRESETS if classes else ["sn-hinge"]:  # 64x64x3 dcgan: the new D only (CPU time)
        key = f"{preset}/{shape[0]}x{shape[2]}/{classes}"
        G = build_generator(preset, 16, shape, classes)
        D = build_discriminator(preset, shape, classes)
        z = ops.convert_to_tensor(np.random.default_rng(0).standard_normal((4, 16)).astype("float32"))
        y = ops.convert_to_tensor(np.eye(classes, dtype="float32")[np.arange(4) % classes]) if classes else None
        images = G([z, y] if classes else z, training=True)
        shapes = []
        for training in (True, False):
            outs = D([images, y] if classes else images, training=training)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            assert all(np.isfinite(ops.convert_to_numpy(o)).all() for o in outs), key
            shapes = [list(o.shape) for o in outs]
        D.save(f"{out}/d.keras")
        again = keras.models.load_model(f"{out}/d.keras", compile=False)
        a, b = D([images, y] if classes else images), again([images, y] if classes else images)
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            np.testing.assert_allclose(ops.convert_to_numpy(u), ops.convert_to_numpy(v), rtol=1e-5, atol=1e-5)
        sn = sum("spectral" in type(l).__name__.lower() for l in D.layers)
        report[key] = {"outputs": shapes, "spectral_layers": sn, "image": list(images.shape)}
G = build_generator("sn-hinge", 16, (28, 28, 1), 10)
G.save(f"{out}/g.keras")
z = np.random.default_rng(1).standard_normal((3, 16)).astype("float32")
y = np.eye(10, dtype="float32")[[0, 1, 2]]
np.save(f"{out}/g_out.npy", ops.convert_to_numpy(G([z, y], training=False)))
report["backend"] = keras.backend.backend()
print(json.dumps(report))
"""

LOAD = r"""
import sys
import numpy as np
import keras
from keras import ops
G = keras.models.load_model(sys.argv[1] + "/g.keras", compile=False)
z = np.random.default_rng(1).standard_normal((3, 16)).astype("float32")
y = np.eye(10, dtype="float32")[[0, 1, 2]]
np.testing.assert_allclose(ops.convert_to_numpy(G([z, y], training=False)), np.load(sys.argv[1] + "/g_out.npy"),
                           rtol=1e-4, atol=1e-4)
print(keras.backend.backend())
"""


def run(code, backend, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("backend, other", [("tensorflow", "jax"), ("jax", "tensorflow")])
def test_every_preset_builds_runs_and_round_trips(tmp_path, backend, other):
    pytest.importorskip(backend)
    report = json.loads(run(SCRIPT, backend, tmp_path))
    assert report["backend"] == backend
    for preset in ("book", "projection"):
        assert report[f"{preset}/28x1/10"]["outputs"] == [[4, 1]] and report[f"{preset}/28x1/10"]["spectral_layers"] == 0
    sn = report["sn-hinge/28x1/10"]
    assert sn["outputs"] == [[4, 1], [4, 10]]  # [logit, class_logits]: the classifier head (aux_weight 0.3)
    assert sn["spectral_layers"] == 2 + 1 + 3  # two stride-2 convs, the extra 3x3 conv, logit/embedding/classes
    rgb = report["sn-hinge/64x3/0"]
    assert rgb["outputs"] == [[4, 1]] and rgb["image"] == [4, 64, 64, 3]  # dcgan: no labels, no head
    assert rgb["spectral_layers"] == 4 + 1 + 1
    # The exported generator loads on the other backend, no custom objects, and computes the same images.
    pytest.importorskip(other)
    assert run(LOAD, other, tmp_path) == other


def test_no_classifier_head_when_aux_weight_is_zero():
    from trainer.models import build_discriminator

    assert len(build_discriminator("sn-hinge", (28, 28, 1), 10, aux_weight=0).outputs) == 1
    assert len(build_discriminator("book", (28, 28, 1), 10, aux_weight=0.5).outputs) == 2
    assert len(build_discriminator("sn-hinge", (28, 28, 1), 0).outputs) == 1  # unconditional: nothing to classify
