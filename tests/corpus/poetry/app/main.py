from fastapi import FastAPI

from app.db import EMBEDDING_MODEL

app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"model": EMBEDDING_MODEL}
