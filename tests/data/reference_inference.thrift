// The reference interface of the ResNet50 Thrift benchmark, as a client of it knows it:
// the two structs and the two methods, nothing else. tests/service/test_service_idl.py
// generates a client from this file alone and calls the server with it.

namespace py serve

struct InferenceParams {
  1: required string uuid;
  2: required binary data;
}

struct InferenceResult {
  1: required string label;
  2: required double score;
}

service InferenceService {
  void ping(),
  InferenceResult infer_batch(1: InferenceParams params),
}
