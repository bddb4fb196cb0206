"""Distillation: synthetic sets, matching methods, the loop, and its Ray Train driver.

Components (pure torch): :mod:`.synthetic` (the two paradigms), :mod:`.methods` (one file a method, and the
catalog of what each needs), :mod:`.loop` (one data-parallel iteration), :mod:`.real` (real clips as matching
data), :mod:`.share` (``--split classes``), :mod:`.stages` (build a stage; fit and write stage 1),
:mod:`.artifact` (stage 1's stills), :mod:`.preview`, :mod:`.progress`; the configuration: :mod:`.settings`
(``DistillConfig``), :mod:`.presets` (Suppl. Tables 10-12), :mod:`.stage_presets` (resolved once),
:mod:`.borrow` (folder datasets). Engine: :mod:`.driver`, on Ray Train through :mod:`.ray_train`. Command:
``python -m raydd.distill`` (:mod:`.__main__`).
"""
