"""Results store: schema, engine factory (DuckDB default, any SQLAlchemy URL), writers, queries."""

from benchsuite.store.engine import check_schema, make_engine, open_store, resolve_url, upgrade
from benchsuite.store.writer import AnalysisRows, RunRows, write_analyses, write_run

__all__ = ["AnalysisRows", "RunRows", "check_schema", "make_engine", "open_store", "resolve_url", "upgrade",
           "write_analyses", "write_run"]
