"""Thrift clients of the inference service: the load tester (client_qps) and a one-call client."""
