"""Attribute classifiers: a ResNet with one head per attribute, its training, and the labeller."""
