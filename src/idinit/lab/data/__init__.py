"""Datasets of the lab, read offline from ``shared/data`` (or a user's folder); never downloaded.

- :func:`data_root`: where the data lives (explicit > ``$IDINIT_DATA`` > ``shared/data`` upward).
- :func:`load_mnist`, :func:`load_cifar10`: numpy uint8 arrays.
- :class:`DeviceLoader`: the whole uint8 set on the device, shuffle/crop/flip done there in batch.
"""
from .cifar10 import CIFAR10, CLASSES, load_cifar10
from .device_loader import CIFAR10_MEAN, CIFAR10_STD, DeviceLoader
from .locate import data_root
from .mnist import load_mnist

__all__ = ["CIFAR10", "CIFAR10_MEAN", "CIFAR10_STD", "CLASSES", "DeviceLoader", "data_root",
           "load_cifar10", "load_mnist"]
