from fastapi import FastAPI

from app.config import settings

VERSION = "1"

app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"ok": bool(settings.secret_key)}


@app.get("/version")
def version() -> dict:
    return {"version": VERSION}
