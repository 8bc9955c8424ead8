"""The Postgres example's own tests that need no database: the pgvector column type."""

import os
import sys
from pathlib import Path

# No Postgres driver needed to import the app: these tests never connect.
os.environ.setdefault("DATABASE_URL", "sqlite://")

EXAMPLE_DIR = Path(__file__).resolve().parents[1]
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))


def test_vector_values_round_trip_as_lists_of_floats():
    from app.models import Item, Vector

    column = Item.__table__.columns["embedding"]
    assert isinstance(column.type, Vector) and column.type.get_col_spec() == "vector(3)"
    bind = column.type.bind_processor(None)
    result = column.type.result_processor(None, None)
    assert bind([1, 2.5, -3]) == "[1.0,2.5,-3.0]"
    assert result("[1,2.5,-3]") == [1.0, 2.5, -3.0]
    assert bind(None) is None and result(None) is None
