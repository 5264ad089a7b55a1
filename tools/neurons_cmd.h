// `modelfs neurons …`: the neuron graph store without a mount (export, import, backups, checks).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace modelfs {

// Adds the subcommand to app; returns the function to run when it was parsed, given the data
// directory (resolved by the caller, which also holds the data directory's lock).
std::function<int(const std::string& data_dir)> AddNeuronsCommand(CLI::App& app, CLI::App** sub);

}  // namespace modelfs
