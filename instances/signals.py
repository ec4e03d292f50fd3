"""Model signals: thin links from model changes to services (see services.py)."""
