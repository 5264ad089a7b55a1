#include "fs/inode_table.h"

#include <algorithm>

namespace modelfs::fs {

InodeTable::InodeTable() {
  auto root = std::make_unique<Node>();
  root->ino = kRootIno;
  root->kind = NodeKind::kRoot;
  root->attr.type = NodeType::kDir;
  root->nlookup = 1;
  dirs_.insert(kRootIno);
  nodes_[kRootIno] = std::move(root);
}

void InodeTable::NumberDir(const Path& path) {
  Ino& number = dir_numbers_[JoinPath(path)];
  if (number == 0) number = next_ino_++;
}

Node* InodeTable::Find(Ino ino) {
  auto it = nodes_.find(ino);
  return it == nodes_.end() ? nullptr : it->second.get();
}

Ino InodeTable::Current(Ino parent, const std::string& name) const {
  auto it = names_.find({parent, name});
  return it == names_.end() ? 0 : it->second;
}

Node* InodeTable::Add(Ino parent, const std::string& name, Path path, NodeKind kind,
                      const NodeAttr& attr, bool attach) {
  auto n = std::make_unique<Node>();
  n->ino = 0;
  if (attr.type == NodeType::kDir) {
    Ino& number = dir_numbers_[JoinPath(path)];
    if (number != 0 && nodes_.count(number) == 0) n->ino = number;
    if (n->ino == 0) number = n->ino = next_ino_++;
  } else {
    n->ino = next_ino_++;
  }
  n->parent = parent;
  n->name = name;
  n->path = std::move(path);
  n->kind = kind;
  n->attr = attr;
  Node* raw = n.get();
  if (attach) {
    Detach(Current(parent, name));
    names_[{parent, name}] = raw->ino;
    raw->attached = true;
  }
  if (attr.type == NodeType::kDir) dirs_.insert(raw->ino);
  nodes_[raw->ino] = std::move(n);
  return raw;
}

void InodeTable::Detach(Ino ino) {
  Node* n = Find(ino);
  if (n == nullptr || !n->attached) return;
  names_.erase({n->parent, n->name});
  n->attached = false;
}

Node* InodeTable::Move(Ino ino, Ino new_parent, const std::string& new_name, Path path) {
  Detach(Current(new_parent, new_name));
  Node* n = Find(ino);
  if (n == nullptr) return nullptr;
  Detach(ino);
  n->parent = new_parent;
  n->name = new_name;
  n->path = std::move(path);
  n->attached = true;
  names_[{new_parent, new_name}] = ino;
  return n;
}

void InodeTable::EraseIfUnused(Ino ino) {
  Node* n = Find(ino);
  if (n == nullptr || ino == kRootIno || n->nlookup > 0 || n->open > 0 || n->reserved) return;
  Detach(ino);
  dirs_.erase(ino);
  nodes_.erase(ino);
}

std::vector<Ino> InodeTable::DirsBelow(const Path& prefix, size_t depth) const {
  depth = std::min(depth, prefix.size());
  std::vector<Ino> out;
  for (Ino ino : dirs_) {
    const Node& n = *nodes_.at(ino);
    if (n.path.size() >= depth && std::equal(prefix.begin(), prefix.begin() + depth, n.path.begin())) {
      out.push_back(ino);
    }
  }
  return out;
}

std::vector<Ino> InodeTable::StoredFilesIn(const std::string& top) const {
  std::vector<Ino> out;
  for (const auto& [key, ino] : names_) {
    const Node& n = *nodes_.at(ino);
    if (n.kind == NodeKind::kStored && n.path.size() > 1 && n.path[0] == top &&
        n.attr.type != NodeType::kDir) {
      out.push_back(ino);
    }
  }
  return out;
}

}  // namespace modelfs::fs
