"""The partner edge: one FastAPI codebase, one service per structure kind (dac, cpts, crt)."""
