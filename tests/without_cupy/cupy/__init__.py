"""Put first on PYTHONPATH, this makes `import cupy` fail as on a machine without CuPy, so
that a subprocess shows what such a user sees, whatever this machine has."""

raise ImportError("No module named 'cupy'")
