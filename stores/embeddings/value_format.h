// damo-embedding's byte formats (seed 001): the RocksDB key, the RocksDB value, the dump header.
// Pure functions on bytes; no I/O. Everything is little-endian and packed (no padding), which is
// what damo wrote by casting packed structs on x86-64; this code only builds on little-endian
// hosts.
//
// Thread-safety: stateless.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "stores/embeddings/embedding_store.h"

namespace modelfs::embeddings {

static_assert(std::endian::native == std::endian::little,
              "damo's formats are the in-memory layout of a little-endian machine");

// The low 56 bits of a feature id; the top 8 bits of a RocksDB key are its group.
constexpr uint64_t kKeyMask = 0x00FFFFFFFFFFFFFFull;
constexpr size_t kStorageKeySize = 8;
// packed { int32 group; u64 key; u64 update_time_ms; u64 update_num; int32 dim; }: 4+8+8+8+4 bytes
constexpr size_t kValueHeaderSize = 32;
constexpr size_t kValueGroupOffset = 0;
constexpr size_t kValueKeyOffset = 4;
constexpr size_t kValueUpdateTimeOffset = 12;
constexpr size_t kValueUpdateNumOffset = 20;
constexpr size_t kValueDimOffset = 28;
// int32 dims[256]; u64 counts[256]
constexpr size_t kDumpHeaderSize = kGroups * sizeof(int32_t) + kGroups * sizeof(uint64_t);
// Per dump record before the weights: u64 key; int32 group.
constexpr size_t kDumpRecordPrefix = sizeof(uint64_t) + sizeof(int32_t);

template <typename T>
inline T LoadLE(const char* p) {
  T v;
  memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void StoreLE(char* p, T v) {
  memcpy(p, &v, sizeof v);
}

// damo's RocksDB key for `key` in `group`: the group replaces the top 8 bits.
inline uint64_t StorageKey(int group, uint64_t key) {
  return (key & kKeyMask) | (static_cast<uint64_t>(group) << 56);
}
inline int GroupOfStorageKey(uint64_t storage_key) { return static_cast<int>(storage_key >> 56); }

struct ValueHeader {
  int32_t group = 0;
  uint64_t key = 0;  // the feature id as the caller gave it (damo does not mask it)
  uint64_t update_time_ms = 0;
  uint64_t update_num = 0;
  int32_t dim = 0;
};

inline ValueHeader DecodeValueHeader(const char* p) {
  ValueHeader h;
  h.group = LoadLE<int32_t>(p + kValueGroupOffset);
  h.key = LoadLE<uint64_t>(p + kValueKeyOffset);
  h.update_time_ms = LoadLE<uint64_t>(p + kValueUpdateTimeOffset);
  h.update_num = LoadLE<uint64_t>(p + kValueUpdateNumOffset);
  h.dim = LoadLE<int32_t>(p + kValueDimOffset);
  return h;
}

inline void EncodeValueHeader(const ValueHeader& h, char* p) {
  StoreLE(p + kValueGroupOffset, h.group);
  StoreLE(p + kValueKeyOffset, h.key);
  StoreLE(p + kValueUpdateTimeOffset, h.update_time_ms);
  StoreLE(p + kValueUpdateNumOffset, h.update_num);
  StoreLE(p + kValueDimOffset, h.dim);
}

// Bytes of a value with `dim` weights and `slots_per_weight` optimizer floats per weight.
inline size_t ValueSize(int32_t dim, int slots_per_weight) {
  return kValueHeaderSize +
         sizeof(float) * static_cast<size_t>(dim) * (1 + static_cast<size_t>(slots_per_weight));
}

// The weights (then the slots) that follow the header. Values live in std::string buffers, whose
// data is suitably aligned for float plus the 32-byte header, i.e. 4-byte aligned.
inline float* ValueFloats(char* value) {
  return reinterpret_cast<float*>(value + kValueHeaderSize);
}

}  // namespace modelfs::embeddings
