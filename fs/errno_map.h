// The one place a Status becomes an errno.
#pragma once

#include "stores/common/status.h"

namespace modelfs::fs {

int ToErrno(const Status& status);

}  // namespace modelfs::fs
