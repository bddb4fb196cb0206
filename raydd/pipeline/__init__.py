"""The pipeline engine: prepare -> experts (MTT only) -> distil static-dynamic and naive -> evaluate four
training sets under one protocol -> one table (:mod:`.comparison`). It runs the other engines, so it sits above
them; ``python -m raydd.pipeline`` (:mod:`.__main__`) is its command."""

from raydd.pipeline.comparison import PipelineConfig, format_table, row_settings, run_pipeline

__all__ = ["PipelineConfig", "format_table", "row_settings", "run_pipeline"]
