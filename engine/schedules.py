"""KL annealing (beta per epoch), the teacher-forcing ratio and the learning rate, as the course defines them."""
import random

from modules.model import stream_seed

KL_TYPES = ("Cyclical", "Monotonic", "None")


COURSE_NONE = ("Without", "W/O")  # the course's and the assignment's spellings of None


def normalize_kl_type(name):
    name = "None" if name in COURSE_NONE else name
    if name not in KL_TYPES:
        raise ValueError(f"--kl_anneal_type must be one of {KL_TYPES} (or Without, W/O), got {name!r}")
    return name


class kl_annealing:
    """beta for epoch e of the current annealing stage (e counts from 0 within the stage).
    Cyclical: min(1, (e mod cycle) / (cycle*ratio)) (Fu et al. 2019); Monotonic: min(1, e / (cycle*ratio));
    None: 1."""

    def __init__(self, kl_type="Cyclical", cycle=10, ratio=1.0, epoch=0):
        self.kl_type, self.cycle, self.ratio = normalize_kl_type(kl_type), cycle, ratio
        if self.kl_type != "None" and (cycle <= 0 or ratio <= 0):
            raise ValueError(f"--kl_anneal_cycle ({cycle}) and --kl_anneal_ratio ({ratio}) must be > 0")
        self.epoch = epoch

    def update(self):
        self.epoch += 1

    def get_beta(self):
        if self.kl_type == "None":
            return 1.0
        e = self.epoch % self.cycle if self.kl_type == "Cyclical" else self.epoch
        return min(1.0, e / (self.cycle * self.ratio))

    def settings(self):
        return [self.kl_type, self.cycle, self.ratio]


def next_tfr(tfr, epoch, tfr_sde, tfr_d_step):
    """Teacher-forcing ratio for the epoch after `epoch` (0-based), as the course: it decays once the
    next epoch's number reaches tfr_sde (with the defaults, epoch 10 is the first at 0.9)."""
    return max(0.0, tfr - tfr_d_step) if epoch + 1 >= tfr_sde else tfr


def use_teacher_forcing(tfr, seed, epoch):
    """One draw per epoch, as the course, derived from (seed, epoch) so it is identical on every rank and on resume."""
    return random.Random(stream_seed(seed, "tf-epoch", epoch)).random() < tfr


def lr_at(lr, gamma, milestones, epoch):
    """MultiStepLR: lr * gamma ** (number of milestones <= epoch)."""
    return lr * gamma ** sum(m <= epoch for m in milestones)
