"""The Thrift image-classification service: server, the two handlers, model export, labels."""
