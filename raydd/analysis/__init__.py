"""The paper's analyses: the temporal study (Sec. 3.3) and the static/dynamic class grouping (Suppl. 9.1)."""
