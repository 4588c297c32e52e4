"""Operations: health and metrics endpoints, Prometheus text, GPU figures, rate-limited logging."""
