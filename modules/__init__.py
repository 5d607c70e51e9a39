from .layers import ConvFFN, DepthConv, DepthConvBlock, ResidualBlock
from .modules import (Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder,
                      check_dims, reparameterize)
