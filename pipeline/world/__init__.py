"""The demo world: synthetic image datasets and clothed scans in the real formats, with ground truth."""
