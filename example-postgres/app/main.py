"""HTTP API of the example app.

Written generically over the Item table's columns, so that the v2 overlay
only has to change models.py (plus a migration) for /items to carry a new column.
"""

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import Field, create_model
from sqlalchemy import String, select, text
from sqlalchemy.orm import Session

from app import __version__
from app.db import SessionLocal, engine
from app.models import Item

DEFAULT_MODEL_NAME = "demo-model"

app = FastAPI(title="example", version=__version__)


def model_name() -> str:
    return os.environ.get("MODEL_NAME") or DEFAULT_MODEL_NAME


def get_db():
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


DbSession = Annotated[Session, Depends(get_db)]


def _input_model():
    """Request body for POST /items: every column the client may set."""
    fields: dict[str, Any] = {}
    for col in Item.__table__.columns:
        if col.primary_key or col.default is not None or col.server_default is not None:
            continue
        py_type = col.type.python_type
        constraints: dict[str, Any] = {}
        if isinstance(col.type, String) and col.type.length:
            constraints["max_length"] = col.type.length
        if col.nullable:
            fields[col.name] = (py_type | None, Field(None, **constraints))
        else:
            if py_type is str:
                constraints["min_length"] = 1
            fields[col.name] = (py_type, Field(..., **constraints))
    return create_model("ItemIn", **fields)


ItemIn = _input_model()


def item_to_dict(item: Item) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in Item.__table__.columns:
        value = getattr(item, col.key)
        out[col.key] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


def _unhealthy(detail: str) -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={"status": "error", "detail": detail, "version": __version__},
    )


@app.get("/")
def index():
    return {"app": "example", "version": __version__, "model_name": model_name()}


@app.get("/health")
def health():
    if os.environ.get("APP_FAIL_HEALTH") == "1":
        return _unhealthy("APP_FAIL_HEALTH=1 is set")
    if not os.environ.get("APP_SECRET"):
        # Never echo the secret (or its absence details beyond the name).
        return _unhealthy("APP_SECRET is not set")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any DB failure means unhealthy
        return _unhealthy(f"database unreachable: {type(exc).__name__}")
    return {"status": "ok", "version": __version__}


def current_revision() -> str | None:
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    except Exception:  # noqa: BLE001 - no table / no database: unknown revision
        return None
    return row[0] if row else None


@app.get("/version")
def version():
    return {"version": __version__, "revision": current_revision()}


@app.get("/items")
def list_items(db: DbSession):
    items = db.scalars(select(Item).order_by(Item.id)).all()
    return [item_to_dict(i) for i in items]


@app.post("/items", status_code=201)
def create_item(payload: ItemIn, db: DbSession):  # type: ignore[valid-type]
    item = Item(**payload.model_dump())
    db.add(item)
    try:
        db.commit()
    except Exception as exc:
        db.rollback()
        detail = f"could not save item: {type(exc).__name__}"
        raise HTTPException(status_code=500, detail=detail) from None
    db.refresh(item)
    return item_to_dict(item)
