// One log line per event, to stderr (foreground) and to the data directory's modelfs.log.
// Thread-safe.
#pragma once

#include <string>

namespace modelfs::fs {

// Sets where lines go besides stderr ("" = stderr only). Call once before serving.
void SetLogFile(const std::string& path, bool also_stderr);
void LogError(const std::string& line);
void LogInfo(const std::string& line);

}  // namespace modelfs::fs
