import os

from sqlalchemy import create_engine, text


def test_vector_column_exists():
    engine = create_engine(os.environ["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        conn.execute(text("CREATE TEMP TABLE t (v vector(3))"))
        conn.execute(text("INSERT INTO t VALUES ('[1,2,3]')"))
        assert conn.execute(text("SELECT v FROM t")).scalar() == "[1,2,3]"
