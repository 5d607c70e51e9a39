"""Building blocks of the course network (stride 1, 'same' padding, full resolution).

Attribute names and nn.Sequential layouts match the course code exactly, so that a
course checkpoint's state_dict loads with strict=True.
"""
import torch.nn as nn


def conv3x3(in_ch, out_ch):
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)


def conv1x1(in_ch, out_ch):
    return nn.Conv2d(in_ch, out_ch, kernel_size=1)


class ResidualBlock(nn.Module):
    """conv3x3 -> act -> conv3x3 -> act, plus identity (or a 1x1 conv when widths differ)."""

    def __init__(self, in_ch, out_ch, slope=0.01):
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch)
        self.leaky_relu = nn.LeakyReLU(negative_slope=slope)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.skip = conv1x1(in_ch, out_ch) if in_ch != out_ch else None

    def forward(self, x):
        out = self.leaky_relu(self.conv1(x))
        out = self.leaky_relu(self.conv2(out))
        identity = x if self.skip is None else self.skip(x)
        return out + identity


class DepthConv(nn.Module):
    """1x1 conv -> act -> depthwise kxk -> 1x1 conv, plus identity (1x1 adaptor when widths differ)."""

    def __init__(self, in_ch, out_ch, depth_kernel=3, slope=0.01):
        super().__init__()
        self.conv1 = nn.Sequential(conv1x1(in_ch, in_ch), nn.LeakyReLU(negative_slope=slope))
        self.depth_conv = nn.Conv2d(in_ch, in_ch, depth_kernel, padding=depth_kernel // 2, groups=in_ch)
        self.conv2 = conv1x1(in_ch, out_ch)
        self.adaptor = conv1x1(in_ch, out_ch) if in_ch != out_ch else None

    def forward(self, x):
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.conv2(self.depth_conv(self.conv1(x))) + identity


class ConvFFN(nn.Module):
    """Gated 1x1 feed-forward: 1x1 to 4c, halves a, b -> a * LeakyReLU(0.1)(b), 1x1 back, plus input."""

    def __init__(self, in_ch, slope=0.1):
        super().__init__()
        hidden = in_ch * 4  # as the course, at every width
        self.conv = conv1x1(in_ch, hidden)
        self.conv_out = conv1x1(hidden // 2, in_ch)
        self.relu = nn.LeakyReLU(negative_slope=slope)

    def forward(self, x):
        a, b = self.conv(x).chunk(2, dim=1)
        return x + self.conv_out(a * self.relu(b))


class DepthConvBlock(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.block = nn.Sequential(DepthConv(in_ch, out_ch), ConvFFN(out_ch))

    def forward(self, x):
        return self.block(x)
