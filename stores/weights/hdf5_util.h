// The HDF5 C library, wrapped once for the weight files (private to stores/weights): the
// process-wide lock every HDF5 call is made under, an RAII handle for hid_t, the one function that
// turns HDF5's error stack into a Status, attribute helpers, and the registration of the LZF and
// zstd filters.
//
// Thread-safety: Debian's serial libhdf5 is not thread-safe, so every HDF5 call (including closing
// a handle) is made while holding the lock returned by LockHdf5(). The lock is recursive: helpers
// and H5Id's destructor take it again without deadlocking. Lock order: never wait for any other
// mutex while holding it (tensor_file.cc takes its own mutexes first or releases this one before).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stores/common/status.h"

namespace modelfs::weights::internal {

using Hdf5Lock = std::unique_lock<std::recursive_mutex>;

// Takes the process-wide HDF5 lock. The first call also initializes the library for us: HDF5's
// automatic error printing off (errors come back as Status), LZF and zstd filters registered.
Hdf5Lock LockHdf5();

// The outcome of that initialization (filter registration); OK when all went well.
Status Hdf5InitStatus();

// The Status for a failed HDF5 call: IOError "what: <messages from HDF5's error stack>". Clears the
// error stack. Call with the lock held, right after the failing call.
Status Hdf5Error(std::string_view what);

// Move-only owner of an HDF5 identifier (file, group, dataset, dataspace, datatype, attribute,
// property list), closed with the H5*close that matches its type. Close() reports the error;
// the destructor closes and ignores it (visibly) for error unwinds and read-only objects.
class H5Id {
 public:
  H5Id() = default;
  explicit H5Id(hid_t id) : id_(id) {}
  H5Id(H5Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  H5Id& operator=(H5Id&& o) noexcept {
    if (this != &o) {
      Reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  ~H5Id() { Reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now; IOError naming `what` when HDF5 fails (for a file: the final flush failed).
  Status Close(std::string_view what);

 private:
  void Reset();
  hid_t id_ = H5I_INVALID_HID;
};

// Wraps the result of an HDF5 call that returns a new identifier: the handle, or Hdf5Error(what).
Result<H5Id> CheckId(hid_t id, std::string_view what);

// ---- attributes (all with the lock held) ----
// A scalar variable-length UTF-8 string: what h5py reads back as str.
Status WriteStringAttr(hid_t obj, const char* name, std::string_view value);
// A scalar integer attribute stored as `file_type` (H5T_STD_I64LE, H5T_STD_U64LE, ...).
Status WriteIntAttr(hid_t obj, const char* name, hid_t file_type, int64_t value);
// A one-dimensional array (possibly empty) of 64-bit integers stored as `file_type`.
Status WriteInt64ArrayAttr(hid_t obj, const char* name, hid_t file_type, const void* values,
                           size_t count);
bool HasAttr(hid_t obj, const char* name);
// A string attribute, variable- or fixed-length. NotFound when missing; Corruption when not a
// string.
Result<std::string> ReadStringAttr(hid_t obj, const char* name);
// Every element of an integer attribute (scalar or any shape), converted to uint64/int64 by HDF5.
// NotFound when missing; Corruption when not integers.
Result<std::vector<uint64_t>> ReadUInt64Attr(hid_t obj, const char* name);
Result<std::vector<int64_t>> ReadInt64Attr(hid_t obj, const char* name);

}  // namespace modelfs::weights::internal
