// One HDF5 filter plugin (built twice: LZF and zstd, see stores/CMakeLists.txt). HDF5 loads the
// libraries in HDF5_PLUGIN_PATH and asks each for its one filter class.
#include <H5PLextern.h>

#include "stores/weights/hdf5_filters.h"

extern "C" H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }

extern "C" const void* H5PLget_plugin_info(void) {
  return &modelfs::weights::internal::MODELFS_PLUGIN_FILTER;
}
