"""Matching methods (DC, DM, MTT, FRePo): one file each, one small interface (:mod:`.base`), and what each needs in
one table (:mod:`.catalog`)."""
