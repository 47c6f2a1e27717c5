"""Alembic knows no `duckdb` dialect; DuckDB speaks PostgreSQL-flavoured DDL, so the default impl works."""

from alembic.ddl.impl import DefaultImpl


class DuckDBImpl(DefaultImpl):
    __dialect__ = "duckdb"
    transactional_ddl = True
