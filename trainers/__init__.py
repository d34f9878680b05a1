"""Training and evaluation loops that read packed HDF5 files."""
