// `modelfs embeddings …`: the embeddings store without a mount.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include <optional>

#include "stores/common/status.h"

namespace modelfs {

// The store's TTL in seconds. A given value is remembered in DATA/embeddings.ttl, so that every later
// mount and command opens the store the same way (opening with another TTL mode converts the whole
// database); without one, the remembered value (or 0: never) is used.
Result<int64_t> ResolveEmbeddingsTtl(const std::string& data_dir, std::optional<int64_t> given);

// Adds the subcommand to app; returns the function to run when it was parsed. data_dir() gives the
// data directory (resolved by the caller, which also takes the data directory's lock).
std::function<int(const std::string& data_dir)> AddEmbeddingsCommand(CLI::App& app,
                                                                      CLI::App** sub);

}  // namespace modelfs
