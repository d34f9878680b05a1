"""Data preparation for PARE and DSR: body models, dataset I/O, rendering, parsing, prior, packing."""
