"""The five networks of the course model. Each is an nn.Sequential so that a course
checkpoint's keys (frame_transformation.0.conv1.weight, ...) load unchanged."""
import torch
import torch.nn as nn

from .layers import DepthConvBlock, ResidualBlock


def check_dims(F_dim, L_dim, N_dim, D_out_dim):
    """The width fractions below must be whole numbers."""
    rules = [("--F_dim", F_dim, 8), ("--L_dim", L_dim, 2), ("--N_dim", N_dim, 4), ("--D_out_dim", D_out_dim, 8),
             ("--F_dim + --L_dim + --N_dim", F_dim + L_dim + N_dim, 4)]
    for flag, value, k in rules:
        if value <= 0 or value % k:
            raise ValueError(f"{flag} = {value} must be a positive multiple of {k}")


class RGB_Encoder(nn.Sequential):
    def __init__(self, in_chans, out_chans):
        c = out_chans
        super().__init__(
            ResidualBlock(in_chans, c // 8), DepthConvBlock(c // 8, c // 8),
            ResidualBlock(c // 8, c // 4), DepthConvBlock(c // 4, c // 4),
            ResidualBlock(c // 4, c // 2), DepthConvBlock(c // 2, c // 2),
            nn.Conv2d(c // 2, c, 3, padding=1),
        )


class Label_Encoder(nn.Sequential):
    def __init__(self, in_chans, out_chans, norm_layer=nn.BatchNorm2d):
        super().__init__(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_chans, out_chans // 2, kernel_size=7),
            norm_layer(out_chans // 2),
            # The course writes LeakyReLU(True): negative_slope=1.0, i.e. an identity. Kept so that
            # course checkpoints compute exactly what they computed in the course.
            nn.LeakyReLU(True),
            ResidualBlock(out_chans // 2, out_chans),
        )


class Gaussian_Predictor(nn.Sequential):
    """(frame features, pose features) -> z, mu, logvar of a spatial latent of N channels."""

    def __init__(self, in_chans, out_chans):
        n = out_chans
        super().__init__(
            ResidualBlock(in_chans, n // 4), DepthConvBlock(n // 4, n // 4),
            ResidualBlock(n // 4, n // 2), DepthConvBlock(n // 2, n // 2),
            ResidualBlock(n // 2, n),
            nn.LeakyReLU(True),  # identity, as in the course (see Label_Encoder)
            nn.Conv2d(n, n * 2, kernel_size=1),
        )

    def params(self, frame_feat, label_feat):
        """mu, logvar only (no sample)."""
        return super().forward(torch.cat([frame_feat, label_feat], dim=1)).chunk(2, dim=1)

    def forward(self, frame_feat, label_feat, eps=None):
        mu, logvar = self.params(frame_feat, label_feat)
        if eps is None:
            eps = torch.randn_like(mu)
        return reparameterize(mu, logvar, eps), mu, logvar


def reparameterize(mu, logvar, eps):
    return mu + torch.exp(0.5 * logvar) * eps


class Decoder_Fusion(nn.Sequential):
    """(previous-frame features, pose features, z) -> decoder features."""

    def __init__(self, in_chans, out_chans):
        c, d = in_chans, out_chans
        super().__init__(
            DepthConvBlock(c, c), ResidualBlock(c, c // 4),
            DepthConvBlock(c // 4, c // 2), ResidualBlock(c // 2, c // 2),
            DepthConvBlock(c // 2, d // 2),
            nn.Conv2d(d // 2, d, kernel_size=1),
        )

    def forward(self, frame_feat, label_feat, z, *reference_feat):
        return super().forward(torch.cat([frame_feat, label_feat, z, *reference_feat], dim=1))


class Generator(nn.Sequential):
    """Decoder features -> the `channels` raw outputs that the output head (modules/heads.py) turns into a frame.
    head_name: the head's --output_activation, for the marker buffer (none for the course's head)."""

    def __init__(self, input_nc, channels, head_name="none"):
        d = input_nc
        super().__init__(
            DepthConvBlock(d, d), ResidualBlock(d, d // 2),
            DepthConvBlock(d // 2, d // 2), ResidualBlock(d // 2, d // 4),
            DepthConvBlock(d // 4, d // 4), ResidualBlock(d // 4, d // 8),
            DepthConvBlock(d // 8, d // 8),
            nn.Conv2d(d // 8, channels, kernel_size=1),
        )
        if head_name != "none":  # a strict load_state_dict in course code refuses it, by this name
            self.register_buffer(self.marker_name(head_name), torch.zeros(()))

    @staticmethod
    def marker_name(head_name):
        """The buffer that makes course code refuse a head it cannot run (its keys and shapes may be the course's)."""
        return f"output_activation_{head_name}_is_not_the_course_model"
