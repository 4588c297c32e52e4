"""Command-line tools beside the server: model export and the GPU check."""
