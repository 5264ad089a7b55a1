#include "stores/weights/hdf5_util.h"

#include <errno.h>
#include <lzf.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "stores/weights/chunk_codec.h"
#include "stores/weights/hdf5_filters.h"

namespace modelfs::weights::internal {
namespace {

std::recursive_mutex& Hdf5Mutex() {
  static std::recursive_mutex mu;
  return mu;
}

struct InitState {
  bool done = false;
  Status status;
};

InitState& Init() {
  static InitState state;
  return state;
}

// Registering replaces whatever HDF5 knows under these ids (a plugin loaded from
// HDF5_PLUGIN_PATH, say): the byte formats are the same.
Status RegisterCodecFilters() {
  if (H5Zregister(&kLzfFilterClass) < 0) return Hdf5Error("registering the LZF filter");
  if (H5Zregister(&kZstdFilterClass) < 0) return Hdf5Error("registering the zstd filter");
  return Status::Ok();
}

herr_t CollectError(unsigned /*n*/, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  std::string text = err->desc != nullptr && err->desc[0] != '\0' ? err->desc : "";
  if (text.empty() && err->func_name != nullptr) text = err->func_name;
  if (!text.empty() && (out->empty() || out->back() != text)) out->push_back(std::move(text));
  return 0;
}

Result<H5Id> OpenAttr(hid_t obj, const char* name) {
  const htri_t exists = H5Aexists(obj, name);
  if (exists < 0) return Hdf5Error(std::string("attribute ") + name);
  if (exists == 0) return NotFound(std::string("attribute ") + name + " missing");
  return CheckId(H5Aopen(obj, name, H5P_DEFAULT), std::string("opening attribute ") + name);
}

template <typename T>
Result<std::vector<T>> ReadIntAttr(hid_t obj, const char* name, hid_t mem_type) {
  ASSIGN_OR_RETURN(H5Id attr, OpenAttr(obj, name));
  ASSIGN_OR_RETURN(H5Id type, CheckId(H5Aget_type(attr.get()), name));
  if (H5Tget_class(type.get()) != H5T_INTEGER) {
    return Corruption(std::string("attribute ") + name + " is not an integer");
  }
  ASSIGN_OR_RETURN(H5Id space, CheckId(H5Aget_space(attr.get()), name));
  const hssize_t count = H5Sget_simple_extent_npoints(space.get());
  if (count < 0) return Hdf5Error(name);
  std::vector<T> values(static_cast<size_t>(count));
  if (count > 0 && H5Aread(attr.get(), mem_type, values.data()) < 0) {
    return Hdf5Error(std::string("reading attribute ") + name);
  }
  return values;
}

Result<H5Id> ScalarSpace() { return CheckId(H5Screate(H5S_SCALAR), "creating a dataspace"); }

}  // namespace

Hdf5Lock LockHdf5() {
  Hdf5Lock lock(Hdf5Mutex());
  InitState& init = Init();
  if (!init.done) {
    init.done = true;
    // Errors come back as Status; HDF5 printing them to stderr would only add noise.
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    init.status = RegisterCodecFilters();
  }
  return lock;
}

Status Hdf5InitStatus() {
  Hdf5Lock lock = LockHdf5();
  return Init().status;
}

Status Hdf5Error(std::string_view what) {
  std::vector<std::string> messages;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, CollectError, &messages);
  H5Eclear2(H5E_DEFAULT);
  std::string text(what);
  text += ": ";
  if (messages.empty()) {
    text += "HDF5 call failed";
  } else {
    // Outermost (what the API call was doing) and the innermost two (the cause).
    if (messages.size() > 3) messages.erase(messages.begin() + 1, messages.end() - 2);
    for (size_t i = 0; i < messages.size(); ++i) text += (i ? "; " : "") + messages[i];
  }
  return IOError(text);
}

void H5Id::Reset() {
  if (valid()) Close("closing an HDF5 object").IgnoreError();  // see the class comment
}

Status H5Id::Close(std::string_view what) {
  if (!valid()) return Status::Ok();
  Hdf5Lock lock = LockHdf5();
  const hid_t id = std::exchange(id_, H5I_INVALID_HID);
  herr_t rc;
  switch (H5Iget_type(id)) {
    case H5I_FILE:
      rc = H5Fclose(id);
      break;
    case H5I_GROUP:
      rc = H5Gclose(id);
      break;
    case H5I_DATATYPE:
      rc = H5Tclose(id);
      break;
    case H5I_DATASPACE:
      rc = H5Sclose(id);
      break;
    case H5I_DATASET:
      rc = H5Dclose(id);
      break;
    case H5I_ATTR:
      rc = H5Aclose(id);
      break;
    case H5I_GENPROP_LST:
      rc = H5Pclose(id);
      break;
    default:
      rc = H5Idec_ref(id) < 0 ? -1 : 0;
      break;
  }
  if (rc < 0) return Hdf5Error(what);
  return Status::Ok();
}

Result<H5Id> CheckId(hid_t id, std::string_view what) {
  if (id < 0) return Hdf5Error(what);
  return H5Id(id);
}

Status WriteStringAttr(hid_t obj, const char* name, std::string_view value) {
  ASSIGN_OR_RETURN(H5Id type, CheckId(H5Tcopy(H5T_C_S1), name));
  if (H5Tset_size(type.get(), H5T_VARIABLE) < 0 || H5Tset_cset(type.get(), H5T_CSET_UTF8) < 0) {
    return Hdf5Error(name);
  }
  ASSIGN_OR_RETURN(H5Id space, ScalarSpace());
  ASSIGN_OR_RETURN(H5Id attr,
                   CheckId(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                           std::string("creating attribute ") + name));
  const std::string copy(value);  // NUL-terminated for HDF5
  const char* ptr = copy.c_str();
  if (H5Awrite(attr.get(), type.get(), &ptr) < 0) {
    return Hdf5Error(std::string("writing attribute ") + name);
  }
  return attr.Close(name);
}

Status WriteIntAttr(hid_t obj, const char* name, hid_t file_type, int64_t value) {
  ASSIGN_OR_RETURN(H5Id space, ScalarSpace());
  ASSIGN_OR_RETURN(H5Id attr,
                   CheckId(H5Acreate2(obj, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                           std::string("creating attribute ") + name));
  if (H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) < 0) {
    return Hdf5Error(std::string("writing attribute ") + name);
  }
  return attr.Close(name);
}

Status WriteInt64ArrayAttr(hid_t obj, const char* name, hid_t file_type, const void* values,
                           size_t count) {
  const hsize_t dims[1] = {count};
  ASSIGN_OR_RETURN(H5Id space, CheckId(H5Screate_simple(1, dims, nullptr), name));
  ASSIGN_OR_RETURN(H5Id attr,
                   CheckId(H5Acreate2(obj, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                           std::string("creating attribute ") + name));
  // The memory type has the file type's signedness: no conversion beyond byte order.
  const hid_t mem_type =
      H5Tget_sign(file_type) == H5T_SGN_NONE ? H5T_NATIVE_UINT64 : H5T_NATIVE_INT64;
  if (count > 0 && H5Awrite(attr.get(), mem_type, values) < 0) {
    return Hdf5Error(std::string("writing attribute ") + name);
  }
  return attr.Close(name);
}

bool HasAttr(hid_t obj, const char* name) { return H5Aexists(obj, name) > 0; }

Result<std::string> ReadStringAttr(hid_t obj, const char* name) {
  ASSIGN_OR_RETURN(H5Id attr, OpenAttr(obj, name));
  ASSIGN_OR_RETURN(H5Id type, CheckId(H5Aget_type(attr.get()), name));
  if (H5Tget_class(type.get()) != H5T_STRING) {
    return Corruption(std::string("attribute ") + name + " is not a string");
  }
  ASSIGN_OR_RETURN(H5Id space, CheckId(H5Aget_space(attr.get()), name));
  if (H5Sget_simple_extent_npoints(space.get()) != 1) {
    return Corruption(std::string("attribute ") + name + " is not a single string");
  }
  const htri_t variable = H5Tis_variable_str(type.get());
  if (variable < 0) return Hdf5Error(name);
  if (variable > 0) {
    ASSIGN_OR_RETURN(H5Id mem_type, CheckId(H5Tcopy(H5T_C_S1), name));
    if (H5Tset_size(mem_type.get(), H5T_VARIABLE) < 0 ||
        H5Tset_cset(mem_type.get(), H5Tget_cset(type.get())) < 0) {
      return Hdf5Error(name);
    }
    char* ptr = nullptr;
    if (H5Aread(attr.get(), mem_type.get(), &ptr) < 0) {
      return Hdf5Error(std::string("reading attribute ") + name);
    }
    std::string value = ptr != nullptr ? ptr : "";
    H5free_memory(ptr);
    return value;
  }
  const size_t size = H5Tget_size(type.get());
  std::string value(size, '\0');
  if (size > 0 && H5Aread(attr.get(), type.get(), value.data()) < 0) {
    return Hdf5Error(std::string("reading attribute ") + name);
  }
  if (H5Tget_strpad(type.get()) == H5T_STR_SPACEPAD) {
    value.erase(value.find_last_not_of(' ') + 1);
  } else if (const size_t nul = value.find('\0'); nul != std::string::npos) {
    value.resize(nul);
  }
  return value;
}

Result<std::vector<uint64_t>> ReadUInt64Attr(hid_t obj, const char* name) {
  return ReadIntAttr<uint64_t>(obj, name, H5T_NATIVE_UINT64);
}

Result<std::vector<int64_t>> ReadInt64Attr(hid_t obj, const char* name) {
  return ReadIntAttr<int64_t>(obj, name, H5T_NATIVE_INT64);
}

}  // namespace modelfs::weights::internal
