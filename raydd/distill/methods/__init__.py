"""Matching methods (DM, MTT, FRePo): one file each, one small interface (:mod:`.base`)."""
