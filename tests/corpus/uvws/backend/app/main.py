from fastapi import FastAPI

from app.config import settings

app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"ok": bool(settings.secret_key)}
