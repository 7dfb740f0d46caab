"""Thin route modules: each checks access, calls the store or a view, and returns a schema."""
