"""Plain functions and data the test files share (pytest fixtures live in tests/conftest.py)."""
