"""Camera calibration and projection, video reading and writing: below both `sources` and `frames`."""
