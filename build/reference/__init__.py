"""Torch reference implementations (biubug6 Pytorch_Retinaface post-processing) used only to make goldens."""
