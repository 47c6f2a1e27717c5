"""Spec language: schema, loading with one-line errors, grid expansion, run ids and names."""

from benchsuite.spec.analyses import analysis_kinds, register_analysis
from benchsuite.spec.load import canonical_json, expand, load_spec, parse_spec, read_spec, run_id, run_name, spec_hash
from benchsuite.spec.schema import AnalysisSpec, DatasetSpec, FamilySpec, MeasureSpec, RunConfig, Spec, TrainSpec

__all__ = [
    "AnalysisSpec", "DatasetSpec", "FamilySpec", "MeasureSpec", "RunConfig", "Spec", "TrainSpec",
    "analysis_kinds", "canonical_json", "expand", "load_spec", "parse_spec", "read_spec", "register_analysis",
    "run_id", "run_name", "spec_hash",
]
