"""Stand-in written for these tests for kuangliu/pytorch-cifar's models package (no code of that
repo). STAND-IN: main.py there trains SimpleDLA; here that name is a tiny convolutional net with
the same input (3x32x32 images) and output (10 logits)."""

from torch import nn


class SimpleDLA(nn.Sequential):
    def __init__(self, num_classes=10):
        super().__init__(
            nn.Conv2d(3, 8, kernel_size=3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, num_classes),
        )
