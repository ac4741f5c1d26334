"""Importable ASGI apps that the tests serve from separate server processes."""
