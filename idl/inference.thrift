// The wire format of the image-classification service: the single source for service/gen.
//
// The first two structs and the first two methods are the reference interface, unchanged, so a
// client generated from the reference IDL alone works against this server. Everything else is
// an extension that such a client never sees.

namespace py inference

struct InferenceParams {
  1: required string uuid;
  2: required binary data;   // the encoded image (JPEG, PNG, BMP...)
}

struct InferenceResult {
  1: required string label;  // "<index> <ImageNet class name>" of the top class
  2: required double score;  // softmax probability of the top class, in (0, 1]
}

// Why a request failed. Clients may retry OVERLOADED and TIMEOUT.
enum ErrorCode {
  INVALID_IMAGE = 1,  // the bytes are not an image that can be decoded, or it is too large
  OVERLOADED = 2,     // the server holds all the work it admits; the request was not run
  TIMEOUT = 3,        // the request waited past its deadline before it could run; not run
  INTERNAL = 4,       // a server-side failure; the log has the details
  TOO_LARGE = 5,      // the payload exceeds the server's size limit
  INVALID_ARGUMENT = 6,  // a parameter other than the image is out of range (e.g. k)
}

exception InferenceError {
  1: required ErrorCode code;
  2: required string message;
  3: optional string uuid;
}

struct Prediction {
  1: required i32 index;     // ImageNet class index
  2: required string label;  // same format as InferenceResult.label
  3: required double score;  // softmax probability
}

// One image's outcome in a list call: predictions, or the error of that image alone.
struct ItemResult {
  1: required string uuid;
  2: optional list<Prediction> predictions;
  3: optional InferenceError error;
}

// One pipeline node's figures: the wire form of the library's NodeStats (torchpipe_lite/metrics.py
// lists each figure once, with how it adds up and is exported; the same names here).
struct WireNodeStats {
  1: required string node;
  2: required string backend;
  3: required i32 instances;
  4: required i64 requests_ok;
  5: required i64 requests_failed;
  6: required i64 requests_rejected;
  7: required i64 requests_timed_out;
  8: required i64 inferences;          // items run through the backend
  9: required i64 executions;          // batches run
  10: required map<i32, i64> batch_sizes;
  11: required double queue_time_ms_total;
  12: required double compute_time_ms_total;
  13: required i32 queue_length;
  // Compute time as the requests saw it: each request counts its whole batch's time
  // (Triton's per-request convention; compute_time_ms_total counts a batch once).
  14: optional double request_compute_time_ms_total;
  // Where each instance computes, in instance order ("cuda:0", "cuda:1"; "" for CPU stages).
  15: optional list<string> instance_placements;
  // Dropped unrun because their client went away (Triton's CANCELED).
  16: optional i64 requests_cancelled;
  // Items run again alone because their batch raised (the batch counts once in executions).
  17: optional i64 items_rerun;
}

// The work a server process admits: images and their declared pixels, in flight at once.
struct AdmissionStats {
  1: required i64 images_in_flight;
  2: required i64 max_images_in_flight;
  3: required double megapixels_in_flight;
  4: required double max_megapixels_in_flight;
  5: required i64 calls_refused;           // answered OVERLOADED at once, unrun
  6: optional i64 images_limit;            // admitted at once now: follows what is cleared
  7: optional double images_cleared_per_s; // measured while busy; unset until measured
}

// The connection layer of a server process since it started.
struct ConnectionStats {
  1: required i32 open;
  2: required i32 max_open;
  3: required i64 accepted;
  4: required i64 refused_over_cap;        // closed at accept: the cap was reached
  5: required i64 closed_idle;             // sent nothing for the idle timeout
  6: required i64 closed_slow_message;     // a message took longer than its deadline
  7: required i64 closed_malformed;        // not a message of this protocol, or over a limit
  8: required i64 replies_undelivered;     // the client had gone when its answer was ready
  9: required i64 calls_abandoned;         // the client went away while its call waited
}

// One GPU of the server's machine, read through NVML when the stats are asked for.
struct GpuStats {
  1: required i32 index;
  2: required string uuid;
  3: required string name;
  4: required double utilization;      // share of the last sample period a kernel ran, 0..1
  5: required i64 memory_used_bytes;
  6: required i64 memory_total_bytes;
}

struct ServerStats {
  1: required string handler;          // "baseline" or "pipelined"
  2: required string device;           // e.g. "cuda:0 (NVIDIA H100)" or "cpu"
  3: required double uptime_s;
  4: required i64 requests_ok;
  5: required i64 requests_failed;
  6: required map<ErrorCode, i64> failures_by_code;
  7: required list<WireNodeStats> nodes;
  8: optional list<GpuStats> gpus;      // absent where NVML or a GPU is missing
  9: optional bool ready;               // warmed up and not draining (what /health/ready says)
  10: optional AdmissionStats admission;
  11: optional ConnectionStats connections;
  // Images whose client went away before their answer (dropped unrun, or finished for no one):
  // neither requests_ok nor requests_failed.
  12: optional i64 requests_cancelled;
}

service InferenceService {
  void ping(),

  // Top-1 of one image (the reference call).
  InferenceResult infer_batch(1: InferenceParams params) throws (1: InferenceError error),

  // The k most probable classes of one image, most probable first (1 <= k <= 1000).
  list<Prediction> infer_topk(1: InferenceParams params, 2: i32 k) throws (1: InferenceError error),

  // Several images in one call, each with its own outcome, in order.
  list<ItemResult> infer_many(1: list<InferenceParams> params, 2: i32 k)
      throws (1: InferenceError error),

  ServerStats stats(),
}
