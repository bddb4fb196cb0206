"""Distillation: synthetic sets, matching methods, the loop, and its Ray Train driver."""
