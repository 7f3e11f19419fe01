"""Job kinds: moderate, translate and write, each a JobKind found through the registry.

Modules here import torch, so only worker processes import them.
"""
