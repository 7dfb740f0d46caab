"""The Dvolver service: FastAPI app (app.py), runner process (runner.py), dashboard (dashboard/)."""
