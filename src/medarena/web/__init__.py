"""Web UI and HTTP API (FastAPI, server-rendered pages)."""
