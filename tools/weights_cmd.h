// `modelfs weights …`: the weight store without a mount.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <optional>
#include <string>

#include "stores/common/status.h"
#include "stores/weights/weight_store.h"

namespace modelfs {

// Opens DATA/weights with the given codec ("zstd-1", "gzip-4", "lzf", "none"; unset: the store's own,
// or zstd-1 for a new store).
Result<std::unique_ptr<weights::WeightStore>> OpenWeightStore(const std::string& data_dir,
                                                              const std::string& codec);

// Adds the subcommand to app; returns the function to run when it was parsed, given the data
// directory (resolved by the caller, which also holds the data directory's lock).
std::function<int(const std::string& data_dir)> AddWeightsCommand(CLI::App& app, CLI::App** sub);

}  // namespace modelfs
