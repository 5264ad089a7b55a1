// The text forms of embeddings things that users type: the `groups` file and view conditions.
//
//   groups:      one line per configured group, '#' comments and blank lines ignored:
//                <group> <dim> <optimizer>[(<name>=<value>,...)] <initializer>[(<name>=<value>,...)]
//                e.g. "0 16 adam(gamma=0.001) random_normal(stddev=0.01)"; omitted parameters take
//                damo's defaults.
//   conditions:  a view name followed by '@' and comma-separated name=value pairs, e.g.
//                dump@min_count=3,expire_days=100  or  group/5@min_count=2
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "stores/common/status.h"
#include "stores/embeddings/embedding_store.h"

namespace modelfs::fs {

std::string FormatGroups(const std::map<int, embeddings::GroupConfig>& groups);
// InvalidArgument naming the line and the reason.
Result<std::map<int, embeddings::GroupConfig>> ParseGroups(std::string_view text);

// Splits "dump@min_count=3" into ("dump", conditions). allow_group: whether group= may appear.
// InvalidArgument for unknown names, bad numbers, a group outside 0..255, repeated names.
Result<std::pair<std::string, embeddings::Conditions>> ParseView(std::string_view name,
                                                                 bool allow_group);

}  // namespace modelfs::fs
