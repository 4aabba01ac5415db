"""The optimizers a run builds (trainer/steps.py: build_nets) carry the resolved config's values."""

import pytest

from trainer.config import TrainConfig
from trainer.steps import build_nets


@pytest.mark.parametrize("beta1, beta2", [(0.0, 0.0), (0.5, 0.9), (0.35, 0.999)])
def test_adam_gets_the_betas_asked_for_zero_included(beta1, beta2):
    cfg = TrainConfig(dataset="mnist", output_dir="/tmp/unused", preset="projection", beta1=beta1, beta2=beta2,
                      lr=1e-4, d_lr=3e-4).resolve()
    nets = build_nets(cfg, (8, 8, 1), 3, "float32")
    for opt, lr in ((nets.g_opt, 1e-4), (nets.d_opt, 3e-4)):
        # --beta2 0 (Adam without a second-moment memory) was silently trained with 0.999.
        assert (float(opt.beta_1), float(opt.beta_2)) == (beta1, beta2)
        assert float(opt.learning_rate) == pytest.approx(lr)
