"""Image stages: decoding (CPU and nvJPEG), resizing, colour, and the checks before decoding."""
