"""An exponential moving average (EMA) of the weights, validated and saved instead of the raw weights.

A free-running 630-frame rollout is sensitive to small changes of the weights: one epoch's raw weights
can score 15 dB and the next 22 dB (README, "Getting good results"). Averaging the weights of the last
steps (Polyak averaging, as SWA does per epoch) smooths that out at no cost to training.
"""
import copy

import torch

from engine import checkpoint


class EMA:
    """avg = d * avg + (1 - d) * weights after each optimizer step, with d = min(decay, (1 + n) / (10 + n))
    after n updates: early on the average spans the last ~10% of the steps, so the random initial
    weights fade out quickly; later it spans about 1 / (1 - decay) steps. Buffers (BatchNorm running
    statistics) are copied, not averaged."""

    def __init__(self, model, decay):
        if not 0 < decay < 1:
            raise ValueError(f"--ema must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1 - d)
        for avg, live in zip(self.model.buffers(), model.buffers()):
            avg.copy_(live)

    def load(self, state_dict, updates, path):
        checkpoint.load_weights(self.model, state_dict, path)
        self.updates = updates
