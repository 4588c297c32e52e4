"""Our pipelined server against the servers a user would pick instead (LitServe, Triton)."""
