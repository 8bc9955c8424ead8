from fastapi import FastAPI

from app.db import EMBEDDING_MODEL

VERSION = "1"

app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"model": EMBEDDING_MODEL}


@app.get("/version")
def version() -> dict:
    return {"version": VERSION}
