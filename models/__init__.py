"""Neural network modules (backbones, Graphonomy, PARE, HMR/DSR, soft rasterizer)."""
