// `modelfs embeddings …`: the embeddings store without a mount.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

namespace modelfs {

// Adds the subcommand to app; returns the function to run when it was parsed. data_dir() gives the
// data directory (resolved by the caller, which also takes the data directory's lock).
std::function<int(const std::string& data_dir)> AddEmbeddingsCommand(CLI::App& app,
                                                                      CLI::App** sub);

}  // namespace modelfs
