// The LZF (32000) and zstd (32015) HDF5 filter classes, byte-compatible with h5py's lzf_filter.c and
// hdf5plugin's zstd filter. Registered in-process by hdf5_util.cc, and exported as HDF5 plugins
// (hdf5_plugin.cc) so that h5dump and h5py open modelfs's files with HDF5_PLUGIN_PATH set: Debian 12
// ships no working zstd plugin, and its LZF plugin is not linked against liblzf.
#pragma once

#include <hdf5.h>

namespace modelfs::weights::internal {

extern const H5Z_class2_t kLzfFilterClass;
extern const H5Z_class2_t kZstdFilterClass;

}  // namespace modelfs::weights::internal
