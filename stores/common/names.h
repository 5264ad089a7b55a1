// Plain file names as store keys (time-series ids, tensor names): what the mount shows as one entry
// of a folder. Shared by the stores so that every folder refuses the same names for the same reasons.
#pragma once

#include <string>
#include <string_view>

#include "stores/common/status.h"

namespace modelfs {

inline constexpr size_t kMaxNameBytes = 255;

// "<what> '<name>'" with control bytes escaped as \xNN, so that a bad name still prints readably
// ("timeseries id 'a\x0ab'").
std::string QuoteName(std::string_view what, std::string_view name);

// OK when name is 1..255 bytes, holds no '/', NUL or other control byte (< 0x20, 0x7f), and does not
// start with '.' (so neither "." nor ".."; dot names are temporary files in the mount). Otherwise
// InvalidArgument (NameTooLong above 255 bytes) naming `what` and the rule broken.
Status ValidatePlainName(std::string_view what, std::string_view name);

// One warning line from a store that cannot return it as a Status (a cleanup that failed after a
// commit). Goes to stderr, which the daemon points at its log file.
void LogStoreWarning(std::string_view store, const std::string& message);

}  // namespace modelfs
