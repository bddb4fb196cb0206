"""The paper's analyses, the engine behind ``python -m raydd.analyse``: the temporal study (Sec. 3.3) and the
static/dynamic class grouping (Suppl. 9.1).

:mod:`.study_config` (its configuration), :mod:`.study` (runs a study), :mod:`.temporal` (K synthetic frames, and
the memory of one iteration), :mod:`.segments`, :mod:`.grouping` and :mod:`.hamming` (Suppl. 9.1's motion
score), :mod:`.report` (tables and plots).
"""
