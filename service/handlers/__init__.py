"""The two handlers behind the Thrift interface and what they share: admission,
preprocessing, scores, labels, warm-up."""
