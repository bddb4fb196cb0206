"""Honest evaluation: train fresh networks on a training set, score them on the real test split.

It needs only the training set and its manifest (a distilled set names its lr preset there), never distill.
Components: :mod:`.plan` (what to train on, checked against the test split), :mod:`.runs` (one run, a Ray
task), :mod:`.train` and :mod:`.fit` (the one supervised loop, shared with experts), :mod:`.sources` (batch
sources, the reference's re-pairing of static-dynamic sets), :mod:`.protocols` (the protocols and the lr/epochs
presets), :mod:`.report`. Engine: :mod:`.job`, behind ``python -m raydd.evaluate``.
"""
