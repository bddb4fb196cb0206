"""Matching methods (DC, DM, MTT, FRePo): one file each, one small interface (:mod:`.base`)."""
