// The neuron graph's entities and their JSON forms (seed 003: the neuron-system storage layer).
//
// Neuron and Synapse are the rows of the original's SQLite schema (stores/neurons/neuron_store.h).
// Their documents are the original's to_dict() dictionaries:
//   neuron:  id, type, position {x, y, z}, vector (list of floats or null), metadata,
//            activation_level, created_at, modified_at, and per type:
//              "knowledge": source_data, compression_ratio, semantic_tags, importance
//              "tool":      function_signature, executable_code, input_schema, output_schema,
//                           execution_count, average_execution_time, activation_threshold
//            plus, for any type, the fields kept in `extra` (other types' fields).
//   synapse: id, source_neuron_id, target_neuron_id, weight, usage_count, last_traversed,
//            synapse_type, metadata, created_at, modified_at.
//
// Text is Python's: PyJsonDump() writes exactly what CPython's json.dumps(value, sort_keys=True)
// writes (ensure_ascii, float repr, NaN/Infinity), so a SHA-256 over it equals the original's
// checksum (SerializationManager.calculate_checksum) over the same data, and exports move between
// the two systems in both directions.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "stores/common/status.h"

namespace modelfs::neurons {

// A JSON value. Objects are std::map, so keys iterate sorted by their UTF-8 bytes, which is the
// order of Python's sort_keys (code points). Numbers keep Python's int/float distinction:
// number_integer / number_unsigned are Python ints, number_float a Python float (NaN and ±inf
// included).
using Json = nlohmann::json;

struct Position {
  double x = 0.0, y = 0.0, z = 0.0;
  bool operator==(const Position&) const = default;
};

struct Neuron {
  std::string id;    // canonical UUID text: 36 lowercase chars, 8-4-4-4-12
  std::string type;  // "knowledge", "tool", "memory", ...: a plain name (it is a folder name)
  Position position;
  // The embedding. Empty means none (the column is NULL; the original treats [] as none too).
  std::vector<float> vector;
  // Number of floats of the stored vector, also when a listing did not load `vector`
  // (NeuronQuery::with_vectors = false); equals vector.size() when it did.
  uint32_t vector_dim = 0;
  // XXH3-64 of the stored vector's bytes (0 for none); set by the store's reads.
  uint64_t vector_hash = 0;
  Json metadata = Json::object();
  double activation_level = 0.0;
  std::string created_at;   // ISO-8601 as the original writes it (datetime.isoformat())
  std::string modified_at;  // idem; the store's listings and change tracking use it
  // Columns of the original's schema for its two built-in types (unset/null = NULL):
  std::optional<std::string> source_data;         // knowledge
  std::optional<double> compression_ratio;        // knowledge
  Json semantic_tags;                             // knowledge: an array, or null
  std::optional<std::string> function_signature;  // tool
  std::optional<std::string> executable_code;     // tool
  Json input_schema;                              // tool: an object, or null
  Json output_schema;                             // tool: an object, or null
  int64_t execution_count = 0;                    // tool
  double average_execution_time = 0.0;            // tool
  double activation_threshold = 0.5;              // tool
  // Every other top-level field of the document (the knowledge type's "importance", the fields of
  // types without columns): an object, kept in the v2 column `extra`.
  Json extra = Json::object();
};

inline constexpr std::string_view kSynapseTypes[] = {"knowledge", "tool_input", "tool_output"};

struct Synapse {
  std::string id;  // canonical UUID text
  std::string source_neuron_id;
  std::string target_neuron_id;
  double weight = 0.5;  // in [-1, 1]
  int64_t usage_count = 0;
  std::optional<std::string> last_traversed;  // ISO-8601 or none
  std::string synapse_type = "knowledge";     // one of kSynapseTypes
  Json metadata = Json::object();
  std::string created_at;
  std::string modified_at;
};

// ---- Identifiers and times ----

// OK for a canonical UUID (36 chars, lowercase hex, dashes at 8, 13, 18, 23); InvalidArgument naming
// `what` otherwise.
Status ValidateUuid(std::string_view what, std::string_view id);
// A new random (version 4) UUID in canonical form.
std::string NewUuid();
// A time as Python's datetime.isoformat() writes a naive datetime: "YYYY-MM-DDTHH:MM:SS" plus
// ".ffffff" when the microseconds are not zero. modelfs writes UTC.
std::string FormatIsoTime(int64_t ns);
std::string NowIsoTime();
// Nanoseconds since the epoch of an ISO-8601 text as datetime.fromisoformat() reads it (date, 'T' or
// ' ', time with optional .f to .ffffff, optional "+HH:MM"/"-HH:MM"/"Z"); a naive time is UTC.
// InvalidArgument for anything else.
Result<int64_t> ParseIsoTime(std::string_view text);

// ---- Python-compatible JSON text ----

// Appends json.dumps(v, sort_keys=True) to out: separators ", " and ": ", ensure_ascii (\uXXXX with
// surrogate pairs, \" \\ \n \r \t \b \f, other control bytes \u00XX), ints as ints, floats as
// Python's repr (shortest round-trip digits, exponent when the decimal exponent is < -4 or >= 16,
// "1e-05", "1e+16", "1.0"), NaN/Infinity/-Infinity. With indent >= 0: json.dumps(v, sort_keys=True,
// indent=indent) (separators "," and ": ", one item per line, empty containers "[]" and "{}").
void PyJsonDump(const Json& v, std::string* out, int indent = -1);
// repr(float(d)) as CPython prints it.
void PyFloatRepr(double d, std::string* out);

// Parses JSON text as Python's json.loads does: NaN, Infinity and -Infinity accepted; integers
// without fraction or exponent are ints (InvalidArgument beyond 64 bits, where Python would keep a
// big int that this model cannot), others floats correctly rounded; duplicate keys keep the last;
// invalid UTF-8, lone surrogates, trailing bytes, or nesting over 512 levels are InvalidArgument.
// Errors name the byte offset.
Result<Json> ParseJson(std::string_view text);

// ---- Documents ----

// The original's to_dict() of n. with_vector false leaves out the "vector" key (the mount's
// per-neuron document, whose vector is its own file).
Json NeuronToDocument(const Neuron& n, bool with_vector);
Json SynapseToDocument(const Synapse& s);

// Reads a document into *n, as the original's from_dict() does: every field absent from doc takes its
// default, except that an absent "vector" leaves n->vector as it is (a document from the mount has
// none). Validation (InvalidArgument naming the field): "id" a canonical UUID (absent: n->id kept);
// "type" a plain name (required unless n->type is set); "position" an object of three numbers;
// "vector" null or a list of numbers; "metadata" an object or null ({}); numbers where the original
// has numbers; strings or null where it has strings; created_at/modified_at null or ISO-8601;
// "semantic_tags" a list or null; "input_schema"/"output_schema" objects or null; "execution_count"
// an int. Absent created_at/modified_at become "" (the store fills in the time of the write). Other
// keys go to extra. n is unchanged on error.
Status NeuronFromDocument(const Json& doc, Neuron* n);
// Same for synapses: weight a finite number in [-1, 1], usage_count an int >= 0, synapse_type one of
// kSynapseTypes, both neuron ids canonical UUIDs; unknown keys are InvalidArgument (the original's
// Synapse has no other fields).
Status SynapseFromDocument(const Json& doc, Synapse* s);

// ---- Whole-graph export (the original's export_to_json format) ----
//
// The file is one JSON object with the original's keys in the original's order:
//   {"version": 1, "export_time": "<iso>", "neurons": [
//   <neuron document, json.dumps(sort_keys=True) text>,
//   ...
//   ], "synapses": [
//   <synapse document>,
//   ...
//   ], "stats": {"neurons_loaded": N, "synapses_loaded": M}, "checksum": "<64 hex>"}
// (one entity per line; the original writes indent=2, which any JSON reader takes the same way), and
// checksum = SHA-256 of json.dumps({"neurons": [...], "synapses": [...]}, sort_keys=True).

struct ExportCounts {
  uint64_t neurons = 0;
  uint64_t synapses = 0;
  uint64_t bytes = 0;     // of the file
  std::string checksum;   // hex
};

// Writes an export to fd (from its current offset, sequentially) while computing the checksum.
// Call Begin, then AddNeuron for every neuron, then AddSynapse for every synapse, then Finish.
// Renders neurons in parallel when given many at once (AddNeurons), so that both cores work.
class ExportWriter {
 public:
  ExportWriter(int fd, std::string export_time);
  ~ExportWriter();
  ExportWriter(const ExportWriter&) = delete;
  ExportWriter& operator=(const ExportWriter&) = delete;
  Status Begin();
  Status AddNeurons(const std::vector<Neuron>& batch);
  Status AddSynapses(const std::vector<Synapse>& batch);
  Result<ExportCounts> Finish();

 private:
  struct Impl;
  Impl* impl_;
};

// Reads an export (either system's) from fd, streaming: entities are handed over in batches as they
// are parsed, so memory stays bounded for any file size. The checksum is computed over the
// canonical text of what was parsed and compared with the file's "checksum" at the end.
//   - "neurons" must come before "synapses" (both systems write them so); "checksum" anywhere.
//   - A file without "checksum" is InvalidArgument unless allow_unverified.
//   - Errors (malformed JSON, an invalid entity, a checksum mismatch) are InvalidArgument naming what
//     and where; the callbacks may have been called for entities before the error, so the caller
//     applies them in a transaction it rolls back on error.
struct ImportCallbacks {
  std::function<Status(std::vector<Neuron>&&)> neurons;
  std::function<Status(std::vector<Synapse>&&)> synapses;
};
Result<ExportCounts> ReadExport(int fd, const ImportCallbacks& callbacks, bool allow_unverified = false);

}  // namespace modelfs::neurons
