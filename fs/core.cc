#include "fs/core.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "fs/log.h"
#include "stores/common/file_util.h"

namespace modelfs::fs {

std::string JoinPath(const Path& p) {
  std::string out;
  for (const auto& c : p) {
    if (!out.empty()) out += '/';
    out += c;
  }
  return out;
}

timespec TimespecFromNanos(int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  if (ts.tv_nsec < 0) {
    ts.tv_sec -= 1;
    ts.tv_nsec += 1000000000;
  }
  return ts;
}

int64_t NanosFromTimespec(const timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

Result<FileContent> MemoryFileContent(std::string_view bytes) {
  int fd = memfd_create("modelfs-content", MFD_CLOEXEC);
  if (fd < 0) return ErrnoError("memfd_create", errno);
  FileContent c;
  c.fd = ScopedFd(fd);
  RETURN_IF_ERROR(PwriteFull(fd, bytes.data(), bytes.size(), 0));
  c.size = bytes.size();
  return c;
}

namespace {

timespec Now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

Path Child(const Path& parent, const std::string& name) {
  Path p = parent;
  p.push_back(name);
  return p;
}

Path Rest(const Path& p) { return Path(p.begin() + 1, p.end()); }

constexpr size_t kMaxNameLength = 255;
constexpr char kXattrPrefix[] = "user.modelfs.";
constexpr char kInodesXattr[] = "user.modelfs.inodes";

}  // namespace

// Staged bytes of one file, shared by all write handles of an inode (or owned by a temporary file).
struct Core::WriteState {
  std::mutex mu;
  std::unique_ptr<StagedFile> staged;  // (mu) null, or the staged bytes; consumed after a commit
  bool dirty = false;                  // (mu) staged bytes differ from what the store has
  bool durable = false;                // (mu) fsync was called: the commit must be durable
  std::optional<timespec> mtime;       // (mu) set by utimens: used as the version's time
  std::map<std::string, std::string> xattrs;  // (mu) user.modelfs.* set before the commit (rsync -X)
  std::string folder_staging_dir;      // constant
};

// A file or directory that exists only in the core: temporary files, files not yet committed, and
// provisional directories.
struct Core::Pending {
  bool is_dir = false;
  std::shared_ptr<WriteState> ws;  // files only
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  timespec mtime{};
};

struct Core::Node {
  Ino ino = 0;
  Ino parent = 0;
  std::string name;
  Path path;  // from the root: {"models", "7", "layers", "0"}
  NodeAttr attr;
  uint64_t nlookup = 0;
  bool attached = false;  // names_ maps (parent, name) to this node
  bool pending = false;   // backed by pending_[JoinPath(path)]
  std::shared_ptr<WriteState> ws;  // committed file opened for writing, or the pending file's
  int open_writers = 0;
};

struct Core::Handle {
  Ino ino = 0;
  bool write = false;
  std::atomic<uint64_t> writes{0};  // write calls through this handle
  std::shared_ptr<FileContent> content;  // read handles: the snapshot
  std::shared_ptr<WriteState> ws;        // write handles and reads of pending files
};

struct Core::DirHandle {
  std::mutex list_mu;
  bool listed = false;                                      // (list_mu)
  std::vector<std::pair<std::string, NodeAttr>> entries;    // (list_mu) set once, then constant
  Path path;                                                // constant
  Ino ino = 0;
  std::vector<Ino> created;  // nodes made for entries; those the kernel never took go at release
};

Core::Core(std::vector<std::unique_ptr<Folder>> folders, CoreOptions options)
    : options_(options), folders_(std::move(folders)) {
  start_time_ = Now();
  auto root = std::make_unique<Node>();
  root->ino = kRootIno;
  root->attr.type = NodeType::kDir;
  root->attr.mtime = start_time_;
  root->nlookup = 1;
  nodes_[kRootIno] = std::move(root);
}

Core::~Core() = default;

void Core::SetInvalidator(EntryInvalidator* inv) { invalidator_ = inv; }

Core::Node* Core::FindNode(Ino ino) {
  auto it = nodes_.find(ino);
  return it == nodes_.end() ? nullptr : it->second.get();
}

Ino Core::CurrentIno(Ino parent, const std::string& name) {
  auto it = names_.find({parent, name});
  return it == names_.end() ? 0 : it->second;
}

void Core::DetachName(Ino ino) {
  Node* n = FindNode(ino);
  if (n == nullptr || !n->attached) return;
  names_.erase({n->parent, n->name});
  n->attached = false;
}

Ino Core::AddNode(Ino parent, const std::string& name, Path path, const NodeAttr& attr) {
  Ino old = CurrentIno(parent, name);
  if (old != 0) DetachName(old);
  auto n = std::make_unique<Node>();
  n->ino = next_ino_++;
  n->parent = parent;
  n->name = name;
  n->path = std::move(path);
  n->attr = attr;
  n->attached = true;
  Ino ino = n->ino;
  names_[{parent, name}] = ino;
  if (attr.type == NodeType::kDir) dir_nodes_.insert(ino);
  nodes_[ino] = std::move(n);
  return ino;
}

void Core::EraseNode(Ino ino) {
  dir_nodes_.erase(ino);
  nodes_.erase(ino);
}

void Core::InvalidateListings(const Path& path, bool wait) {
  if (invalidator_ == nullptr || path.empty()) return;
  const size_t depth = std::min<size_t>(path.size(), 2);
  std::vector<Ino> dirs;
  {
    std::lock_guard lock(mu_);
    for (Ino ino : dir_nodes_) {
      Node* n = FindNode(ino);
      if (n != nullptr && n->path.size() >= depth &&
          std::equal(path.begin(), path.begin() + depth, n->path.begin())) {
        dirs.push_back(ino);
      }
    }
  }
  for (Ino ino : dirs) invalidator_->InvalidateInode(ino, wait);
}

Core::Node* Core::MoveName(Ino ino, Ino new_parent, const std::string& new_name, const Path& path) {
  DetachName(CurrentIno(new_parent, new_name));
  Node* n = FindNode(ino);
  if (n == nullptr) return nullptr;
  DetachName(ino);
  n->parent = new_parent;
  n->name = new_name;
  n->path = path;
  n->attached = true;
  names_[{new_parent, new_name}] = ino;
  return n;
}

Core::Pending* Core::FindPending(const std::string& key) {
  auto it = pending_.find(key);
  return it == pending_.end() ? nullptr : it->second.get();
}

Result<Folder*> Core::FolderOf(const Path& path) {
  if (path.empty()) return PermissionDenied("the root folder holds only the store folders");
  for (auto& f : folders_) {
    if (f->name() == path[0]) return f.get();
  }
  return NotFound(path[0] + ": no such folder");
}

Result<Path> Core::ChildPath(Ino parent, const std::string& name) {
  if (name.size() > kMaxNameLength) return NameTooLong(name.substr(0, 32) + "...: name too long");
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return InvalidArgument("'" + name + "': not a valid name");
  }
  std::lock_guard lock(mu_);
  Node* p = FindNode(parent);
  if (p == nullptr) return NotFound("unknown inode");
  if (p->attr.type != NodeType::kDir) return NotADirectory(JoinPath(p->path) + ": not a folder");
  return Child(p->path, name);
}

Result<NodeAttr> Core::StatPath(const Path& path) {
  if (path.empty()) {
    NodeAttr a;
    a.type = NodeType::kDir;
    a.mtime = start_time_;
    return a;
  }
  std::shared_ptr<WriteState> ws;
  std::optional<Pending> provisional;
  {
    std::lock_guard lock(mu_);
    Pending* p = FindPending(JoinPath(path));
    if (p == nullptr && IsTemporaryName(path.back())) return NotFound(JoinPath(path) + ": no such file");
    if (p != nullptr && p->is_dir) {
      provisional = *p;
      p = nullptr;
    }
    if (p != nullptr) {
      NodeAttr a;
      a.type = p->is_dir ? NodeType::kDir : NodeType::kFile;
      a.mtime = p->mtime;
      a.writable = true;
      ws = p->ws;
      if (!ws) return a;
      std::lock_guard wl(ws->mu);
      if (ws->staged) {
        auto size = FileSize(ws->staged->fd());
        if (size.ok()) a.size = *size;
      }
      if (ws->mtime) a.mtime = *ws->mtime;
      return a;
    }
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  auto attr = folder->Stat(Rest(path));
  if (!provisional) return attr;
  if (attr.ok()) {
    // A provisional folder that now exists in the store (its first file was committed).
    std::lock_guard lock(mu_);
    pending_.erase(JoinPath(path));
    return attr;
  }
  NodeAttr a;
  a.type = NodeType::kDir;
  a.mtime = provisional->mtime;
  return a;
}

struct stat Core::MakeStat(Ino ino, const NodeAttr& attr) {
  struct stat st {};
  st.st_ino = ino;
  st.st_uid = options_.uid;
  st.st_gid = options_.gid;
  switch (attr.type) {
    case NodeType::kDir:
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
      break;
    case NodeType::kFile:
      st.st_mode = S_IFREG | (attr.writable && !options_.read_only ? 0644 : 0444);
      st.st_nlink = 1;
      break;
    case NodeType::kSymlink:
      st.st_mode = S_IFLNK | 0777;
      st.st_nlink = 1;
      break;
  }
  st.st_size = static_cast<off_t>(attr.size);
  st.st_blksize = 128 * 1024;
  st.st_blocks = static_cast<blkcnt_t>((attr.size + 511) / 512);
  st.st_mtim = attr.mtime;
  st.st_ctim = attr.mtime;
  st.st_atim = attr.mtime;
  return st;
}

EntryOut Core::MakeEntry(Ino ino, const NodeAttr& attr) {
  EntryOut e;
  e.attr = MakeStat(ino, attr);
  Node* n = FindNode(ino);
  if (n != nullptr && n->pending) {
    if (Pending* p = FindPending(JoinPath(n->path))) {
      if (!p->is_dir) e.attr.st_mode = S_IFREG | (p->mode & 07777);
    }
    e.entry_timeout = 0;
    e.attr_timeout = 0;
  } else if (attr.type == NodeType::kDir) {
    e.entry_timeout = options_.entry_timeout;
    e.attr_timeout = options_.dir_attr_timeout;
  } else {
    e.entry_timeout = options_.entry_timeout;
    e.attr_timeout = options_.attr_timeout;
  }
  return e;
}

// Finds or makes the node for (parent, name) with these attributes; one more kernel reference.
// A committed file whose version changed gets a new inode (see the class comment).
static bool SameContent(const NodeAttr& a, const NodeAttr& b) {
  return a.type == b.type && (a.type == NodeType::kDir || a.version == b.version);
}

Result<EntryOut> Core::Lookup(Ino parent, const std::string& name) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  auto found = StatPath(path);
  if (!found.ok()) {
    // A name that cannot exist does not exist: creating it then says precisely why it is refused.
    if (found.status().code() == StatusCode::kInvalidArgument) return NotFound(found.status().message());
    return found.status();
  }
  NodeAttr attr = *found;
  std::lock_guard lock(mu_);
  bool pending = FindPending(JoinPath(path)) != nullptr;
  Ino ino = CurrentIno(parent, name);
  Node* n = ino ? FindNode(ino) : nullptr;
  if (n == nullptr || n->pending != pending || !SameContent(n->attr, attr)) {
    ino = AddNode(parent, name, path, attr);
    n = FindNode(ino);
    n->pending = pending;
    if (pending) n->ws = FindPending(JoinPath(path))->ws;
  }
  n->attr = attr;
  n->nlookup++;
  return MakeEntry(ino, attr);
}

void Core::Remember(Ino ino) {
  std::lock_guard lock(mu_);
  if (Node* n = FindNode(ino)) n->nlookup++;
}

void Core::Forget(Ino ino, uint64_t nlookup) {
  std::lock_guard lock(mu_);
  Node* n = FindNode(ino);
  if (n == nullptr || ino == kRootIno) return;
  n->nlookup = nlookup >= n->nlookup ? 0 : n->nlookup - nlookup;
  if (n->nlookup == 0 && n->open_writers == 0) {
    DetachName(ino);
    EraseNode(ino);
  }
}

size_t Core::node_count() {
  std::lock_guard lock(mu_);
  return nodes_.size();
}

Result<AttrOut> Core::GetAttr(Ino ino) {
  Path path;
  NodeAttr cached;
  bool refresh = false;
  {
    std::lock_guard lock(mu_);
    Node* n = FindNode(ino);
    if (n == nullptr) return NotFound("unknown inode");
    path = n->path;
    cached = n->attr;
    // A committed file's attributes never change under its inode; directories and pending files do.
    refresh = n->attached && (n->pending || n->attr.type == NodeType::kDir);
  }
  NodeAttr attr = cached;
  if (refresh) {
    auto fresh = StatPath(path);
    if (fresh.ok()) attr = *fresh;
  }
  std::lock_guard lock(mu_);
  Node* n = FindNode(ino);
  if (n == nullptr) return NotFound("unknown inode");
  n->attr = attr;
  EntryOut e = MakeEntry(ino, attr);
  return AttrOut{e.attr, e.attr_timeout};
}

Status Core::EnsureStaged(const Path& path, WriteState& ws, bool truncate) {
  if (ws.staged && !ws.staged->consumed()) return Status::Ok();
  ASSIGN_OR_RETURN(auto fresh, StagedFile::Create(ws.folder_staging_dir));
  if (!truncate) {
    // Copy-on-write: the staged file starts as the current bytes (dd conv=notrunc, rsync --inplace).
    if (ws.staged) {  // consumed by the previous commit: its fd holds the committed bytes
      ASSIGN_OR_RETURN(uint64_t size, FileSize(ws.staged->fd()));
      RETURN_IF_ERROR(CopyRange(ws.staged->fd(), 0, fresh->fd(), 0, size));
    } else {
      ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
      ASSIGN_OR_RETURN(FileContent content, folder->Open(Rest(path)));
      RETURN_IF_ERROR(CopyRange(content.fd.get(), 0, fresh->fd(), 0, content.size));
    }
  }
  ws.staged = std::move(fresh);
  return Status::Ok();
}

Status Core::CommitState(const Path& path, WriteState& ws, Vanished* vanished) {
  if (!ws.staged || ws.staged->consumed()) {
    ws.dirty = false;
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  CommitContext ctx;
  ctx.mtime = ws.mtime;
  ctx.durable = ws.durable;
  ctx.xattrs.assign(ws.xattrs.begin(), ws.xattrs.end());
  Status st = folder->Commit(Rest(path), *ws.staged, ctx, vanished);
  if (st.ok()) ws.dirty = false;
  return st;
}

Result<Ino> Core::LookupPathIno(const Path& path) {
  Ino ino = kRootIno;
  for (const auto& c : path) {
    ino = CurrentIno(ino, c);
    if (ino == 0) return NotFound("not cached");
  }
  return ino;
}

void Core::InvalidateVanished(const Path& folder_prefix, const Vanished& vanished) {
  std::vector<std::pair<Ino, std::string>> todo;
  // Forgets the names of every committed file of top-level folder `top`.
  auto forget_all_files = [&](const std::string& top) {
    std::lock_guard lock(mu_);
    std::vector<Ino> all;
    for (const auto& [key, ino] : names_) {
      Node* n = FindNode(ino);
      if (n != nullptr && n->path.size() > 1 && n->path[0] == top && !n->pending &&
          n->attr.type != NodeType::kDir) {
        all.push_back(ino);
      }
    }
    for (Ino ino : all) {
      Node* n = FindNode(ino);
      todo.emplace_back(n->parent, n->name);
      DetachName(ino);
    }
  };
  auto folder = FolderOf(folder_prefix);
  if (folder.ok() && (*folder)->CommitsChangeEverything()) forget_all_files(folder_prefix[0]);
  std::vector<std::string> other_folders;  // listings to drop: a side effect reached them
  for (const Path& rel : vanished) {
    Path full;
    if (!rel.empty() && rel[0] == "/") {
      if (rel.size() < 2) continue;
      full.assign(rel.begin() + 1, rel.end());
      if (full[0] != folder_prefix[0]) other_folders.push_back(full[0]);
    } else {
      full = folder_prefix;
      full.insert(full.end(), rel.begin(), rel.end());
    }
    if (full.size() == 2 && full[1] == "*") {
      forget_all_files(full[0]);
      continue;
    }
    std::lock_guard lock(mu_);
    auto ino = LookupPathIno(full);
    if (!ino.ok()) continue;
    Node* n = FindNode(*ino);
    todo.emplace_back(n->parent, n->name);
    DetachName(*ino);
  }
  for (const std::string& top : other_folders) InvalidateListings({top}, /*wait=*/false);
  if (invalidator_ == nullptr) return;
  for (auto& [parent, name] : todo) invalidator_->InvalidateEntry(parent, name, /*wait=*/false);
}

Result<AttrOut> Core::SetAttr(Ino ino, const SetAttrIn& in) {
  Path path;
  bool pending;
  NodeType type;
  std::shared_ptr<WriteState> ws;
  std::shared_ptr<Handle> handle;
  int open_writers = 0;
  {
    std::lock_guard lock(mu_);
    Node* n = FindNode(ino);
    if (n == nullptr) return NotFound("unknown inode");
    path = n->path;
    pending = n->pending;
    type = n->attr.type;
    ws = n->ws;
    open_writers = n->open_writers;
    if (in.fh) {
      auto it = handles_.find(*in.fh);
      if (it != handles_.end()) handle = it->second;
    }
    if (pending) {
      Pending* p = FindPending(JoinPath(path));
      if (p != nullptr) {
        if (in.mode) p->mode = *in.mode & 07777;
        if (in.uid) p->uid = *in.uid;
        if (in.gid) p->gid = *in.gid;
        if (in.mtime) p->mtime = *in.mtime;
      }
    }
  }
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  if (in.size) {
    if (type == NodeType::kDir) return IsADirectory(JoinPath(path) + ": is a folder");
    // The kernel sends open(O_TRUNC) as a truncate without a file handle, so a truncate while the
    // inode has writers belongs to their staged file, like ftruncate on an open file does.
    std::shared_ptr<WriteState> target;
    if (handle && handle->write) {
      target = handle->ws;
    } else if (!pending && ws && open_writers > 0) {
      target = ws;
    }
    if (target) {
      // The kernel is told the committed size (below), so readers of this inode keep their snapshot
      // until the writer's commit.
      std::lock_guard wl(target->mu);
      RETURN_IF_ERROR(EnsureStaged(path, *target, *in.size == 0));
      if (ftruncate(target->staged->fd(), static_cast<off_t>(*in.size)) != 0) {
        return ErrnoError(JoinPath(path) + ": truncate of staged file", errno);
      }
      target->dirty = true;
    } else if (pending && ws) {
      std::lock_guard wl(ws->mu);
      if (ftruncate(ws->staged->fd(), static_cast<off_t>(*in.size)) != 0) {
        return ErrnoError(JoinPath(path) + ": truncate of staged file", errno);
      }
    } else {
      // truncate(2) by path on a committed file: a whole write, committed at once.
      ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
      RETURN_IF_ERROR(folder->CheckWritable(Rest(path)));
      WriteState tmp;
      tmp.folder_staging_dir = folder->staging_dir();
      RETURN_IF_ERROR(EnsureStaged(path, tmp, *in.size == 0));
      if (ftruncate(tmp.staged->fd(), static_cast<off_t>(*in.size)) != 0) {
        return ErrnoError(JoinPath(path) + ": truncate of staged file", errno);
      }
      Vanished vanished{Rest(path)};
      RETURN_IF_ERROR(CommitState(path, tmp, &vanished));
      ASSIGN_OR_RETURN(NodeAttr fresh, StatPath(path));
      InvalidateVanished({path[0]}, vanished);
      InvalidateListings(path, /*wait=*/false);
      std::lock_guard lock(mu_);
      return AttrOut{MakeStat(ino, fresh), 0};
    }
  }
  // A time set on a file being written (rsync before its rename, cp -p through the open handle) is
  // kept with the staged bytes and offered to the folder at commit.
  std::shared_ptr<WriteState> timed = handle && handle->write ? handle->ws
                                      : (pending || open_writers > 0) ? ws : nullptr;
  if (in.mtime && timed) {
    std::lock_guard wl(timed->mu);
    timed->mtime = *in.mtime;
  }
  // Modes and owners of committed entries are the store's: changing them is accepted (so that rsync -a
  // and cp -p work) and not kept. Their times go to the folder, which keeps them or not (SetMtime).
  // Staged files keep all of them until their commit.
  if (in.mtime && !timed && !pending && path.size() > 1) {
    ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
    Vanished vanished;
    RETURN_IF_ERROR(folder->SetMtime(Rest(path), *in.mtime, &vanished));
    // Usually the inode keeps its content version and only its attributes move. A file whose bytes
    // show its time changed content: its name goes to a new inode, as after a commit.
    auto fresh = StatPath(path);
    if (fresh.ok()) {
      std::lock_guard lock(mu_);
      Node* n = FindNode(ino);
      if (n != nullptr && SameContent(n->attr, *fresh)) {
        n->attr = *fresh;
      } else if (n != nullptr) {
        vanished.push_back(Rest(path));
      }
    }
    InvalidateVanished({path[0]}, vanished);
  }
  return GetAttr(ino);
}

Result<std::string> Core::ReadLink(Ino ino) {
  Path path;
  {
    std::lock_guard lock(mu_);
    Node* n = FindNode(ino);
    if (n == nullptr) return NotFound("unknown inode");
    path = n->path;
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  return folder->ReadLink(Rest(path));
}

Result<EntryOut> Core::Symlink(Ino parent, const std::string& name, const std::string& target) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  if (IsTemporaryName(name)) {
    return InvalidArgument(JoinPath(path) + ": link names cannot start with '.' (temporary names)");
  }
  if (path.size() < 2) return PermissionDenied(JoinPath(path) + ": the top-level folders are fixed");
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  if (StatPath(path).ok()) return AlreadyExists(JoinPath(path) + ": exists");
  Vanished vanished;
  RETURN_IF_ERROR(folder->MakeSymlink(Rest(path), target, &vanished));
  InvalidateVanished({path[0]}, vanished);
  InvalidateListings(path, /*wait=*/false);
  return Lookup(parent, name);
}

Result<EntryOut> Core::MakeDir(Ino parent, const std::string& name) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  if (IsTemporaryName(name)) return InvalidArgument(JoinPath(path) + ": folder names cannot start with '.'");
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  if (path.size() == 1) return AlreadyExists(path[0] + ": exists");
  if (StatPath(path).ok()) return AlreadyExists(JoinPath(path) + ": exists");
  ASSIGN_OR_RETURN(MkdirOutcome outcome, folder->MakeDir(Rest(path)));
  if (outcome == MkdirOutcome::kProvisional) {
    std::lock_guard lock(mu_);
    auto p = std::make_unique<Pending>();
    p->is_dir = true;
    p->mtime = Now();
    pending_[JoinPath(path)] = std::move(p);
  }
  InvalidateListings(path, /*wait=*/false);
  return Lookup(parent, name);
}

Status Core::Unlink(Ino parent, const std::string& name) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(JoinPath(path));
    if (it != pending_.end()) {
      if (it->second->is_dir) return IsADirectory(JoinPath(path) + ": is a folder");
      pending_.erase(it);
      DetachName(CurrentIno(parent, name));
      return Status::Ok();
    }
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  if (path.size() == 1) return PermissionDenied(path[0] + ": store folders cannot be removed");
  Vanished vanished;
  RETURN_IF_ERROR(folder->Remove(Rest(path), &vanished));
  const Path dir(path.begin(), path.end() - 1);
  const bool dir_gone = dir.size() > 1 && !StatPath(dir).ok();
  {
    std::lock_guard lock(mu_);
    DetachName(CurrentIno(parent, name));
    if (dir_gone) {
      // Removing the last file of a derived folder (history/<n>) would make the folder vanish under
      // `rm -r`, whose rmdir comes next: like any folder, it stays until it is removed.
      auto p = std::make_unique<Pending>();
      p->is_dir = true;
      p->mtime = Now();
      pending_[JoinPath(dir)] = std::move(p);
    }
  }
  InvalidateVanished({path[0]}, vanished);
  InvalidateListings(path, /*wait=*/false);
  return Status::Ok();
}

Status Core::RemoveDir(Ino parent, const std::string& name) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  std::string key = JoinPath(path);
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(key);
    if (it != pending_.end()) {
      if (!it->second->is_dir) return NotADirectory(key + ": not a folder");
      auto child = pending_.lower_bound(key + "/");
      if (child != pending_.end() && child->first.compare(0, key.size() + 1, key + "/") == 0) {
        return NotEmpty(key + ": folder not empty");
      }
      pending_.erase(it);
      DetachName(CurrentIno(parent, name));
      return Status::Ok();
    }
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  if (path.size() == 1) return PermissionDenied(path[0] + ": store folders cannot be removed");
  Vanished vanished;
  RETURN_IF_ERROR(folder->RemoveDir(Rest(path), &vanished));
  {
    std::lock_guard lock(mu_);
    DetachName(CurrentIno(parent, name));
  }
  InvalidateVanished({path[0]}, vanished);
  InvalidateListings(path, /*wait=*/false);
  return Status::Ok();
}

Status Core::Rename(Ino parent, const std::string& name, Ino new_parent,
                    const std::string& new_name, unsigned flags) {
  ASSIGN_OR_RETURN(Path from, ChildPath(parent, name));
  ASSIGN_OR_RETURN(Path to, ChildPath(new_parent, new_name));
  if (options_.read_only) return ReadOnly(JoinPath(from) + ": mounted read-only");
  if (flags & RENAME_EXCHANGE) return NotSupported(JoinPath(from) + ": exchanging names is not supported");
  if (from.size() < 2 || to.size() < 2) return PermissionDenied("store folders cannot be renamed");
  if (from[0] != to[0]) return {StatusCode::kNotSupported, "cross-folder rename: " + JoinPath(from)};
  const std::string from_key = JoinPath(from), to_key = JoinPath(to);
  if (from_key == to_key) return Status::Ok();
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(from));
  bool dst_exists = StatPath(to).ok();
  if ((flags & RENAME_NOREPLACE) && dst_exists) return AlreadyExists(to_key + ": exists");

  std::shared_ptr<WriteState> ws;
  {
    std::lock_guard lock(mu_);
    Pending* p = FindPending(from_key);
    if (p != nullptr) {
      if (p->is_dir) return NotSupported(from_key + ": renaming folders is not supported");
      ws = p->ws;
      if (IsTemporaryName(new_name)) {
        // One temporary name to another: nothing reaches the store.
        pending_[to_key] = std::move(pending_[from_key]);
        pending_.erase(from_key);
        MoveName(CurrentIno(parent, name), new_parent, new_name, to);
        return Status::Ok();
      }
    }
  }
  if (!ws) {
    Vanished vanished;
    RETURN_IF_ERROR(folder->Rename(Rest(from), Rest(to), &vanished));
    auto attr = StatPath(to);
    {
      std::lock_guard lock(mu_);
      // The kernel moved its dentry onto the renamed inode, and may ask it (readlink) before any
      // lookup: the inode now stands for `to`. If what `to` is differs from what the inode was, it
      // keeps the new path but loses the name, so the next lookup makes a fresh inode.
      Node* n = MoveName(CurrentIno(parent, name), new_parent, new_name, to);
      if (n != nullptr && (!attr.ok() || attr->type != n->attr.type || !SameContent(n->attr, *attr))) {
        DetachName(n->ino);
      } else if (n != nullptr) {
        n->attr = *attr;
      }
    }
    InvalidateVanished({from[0]}, vanished);
    InvalidateListings(to, /*wait=*/false);  // rename holds the folders' locks: queue, do not wait
    return Status::Ok();
  }
  // A staged file renamed onto a real name: this is its commit (rsync's .name.XXXXXX -> name).
  RETURN_IF_ERROR(folder->CheckWritable(Rest(to)));
  Vanished vanished;
  {
    std::lock_guard wl(ws->mu);
    RETURN_IF_ERROR(CommitState(to, *ws, &vanished));
  }
  // A file made on demand (a view, an export) would be regenerated just to stat it: its name is
  // dropped instead (InvalidateVanished) and looked up afresh when next used.
  const bool lazy = folder->MadeOnDemand(Rest(to));
  NodeAttr attr;
  if (!lazy) {
    ASSIGN_OR_RETURN(attr, StatPath(to));
  } else {
    vanished.push_back(Rest(to));
  }
  {
    std::lock_guard lock(mu_);
    pending_.erase(from_key);
    Ino ino = CurrentIno(parent, name);
    // The kernel moved its dentry onto this inode; it now stands for the committed bytes, which are
    // the bytes it was written with (its pages were never cached: writes are direct I/O).
    if (Node* n = MoveName(ino, new_parent, new_name, to)) {
      n->pending = false;
      if (!lazy && attr.type == NodeType::kFile) n->attr = attr;
      // What was written became another kind of entry (weights/<name>: a link to the tensor's hash).
      // The kernel must not see an inode change type: the name gets a fresh inode at the next lookup.
      if (!lazy && attr.type != NodeType::kFile) vanished.push_back(Rest(to));
    }
  }
  InvalidateVanished({from[0]}, vanished);
  InvalidateListings(to, /*wait=*/false);  // rename holds the folders' locks: queue, do not wait
  return Status::Ok();
}

Result<uint64_t> Core::OpenDir(Ino ino) {
  auto dh = std::make_shared<DirHandle>();
  {
    std::lock_guard lock(mu_);
    Node* n = FindNode(ino);
    if (n == nullptr) return NotFound("unknown inode");
    if (n->attr.type != NodeType::kDir) return NotADirectory(JoinPath(n->path) + ": not a folder");
    dh->path = n->path;
  }
  dh->ino = ino;
  std::lock_guard lock(mu_);
  uint64_t id = next_fh_++;
  dir_handles_[id] = std::move(dh);
  return id;
}

Result<std::vector<std::pair<std::string, NodeAttr>>> Core::ListEntries(const Path& path) {
  std::vector<std::pair<std::string, NodeAttr>> entries;
  if (path.empty()) {
    for (auto& f : folders_) {
      auto a = f->Stat({});
      if (a.ok()) entries.emplace_back(std::string(f->name()), *a);
    }
    return entries;
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  (void)StatPath(path);  // drops the provisional entry if the store has the folder now
  bool provisional;
  {
    std::lock_guard lock(mu_);
    provisional = FindPending(JoinPath(path)) != nullptr;
  }
  if (!provisional) {
    ASSIGN_OR_RETURN(auto listed, folder->List(Rest(path)));
    entries.reserve(listed.size());
    for (auto& e : listed) entries.emplace_back(std::move(e.name), e.attr);
  }
  // Pending entries directly below this folder.
  std::vector<Path> pending_children;
  {
    std::lock_guard lock(mu_);
    const std::string prefix = JoinPath(path) + "/";
    for (auto it = pending_.lower_bound(prefix);
         it != pending_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
      if (it->first.find('/', prefix.size()) == std::string::npos) {
        pending_children.push_back(Child(path, it->first.substr(prefix.size())));
      }
    }
  }
  for (const Path& c : pending_children) {
    auto a = StatPath(c);
    if (!a.ok()) continue;
    auto same = std::find_if(entries.begin(), entries.end(),
                             [&](const auto& e) { return e.first == c.back(); });
    if (same == entries.end()) entries.emplace_back(c.back(), *a);
  }
  return entries;
}

Result<std::vector<std::pair<std::string, EntryOut>>> Core::ReadDir(uint64_t dh, uint64_t offset) {
  std::shared_ptr<DirHandle> handle;
  {
    std::lock_guard lock(mu_);
    auto it = dir_handles_.find(dh);
    if (it == dir_handles_.end()) return InvalidArgument("unknown directory handle");
    handle = it->second;
  }
  {
    // The listing is made at the first read, not at opendir: when the kernel still holds a valid
    // cached listing (cache_readdir) it reads nothing, and a folder of 100,000 entries is not listed
    // for nothing at every opendir (find, ls).
    std::lock_guard listing(handle->list_mu);
    if (!handle->listed) {
      ASSIGN_OR_RETURN(handle->entries, ListEntries(handle->path));
      handle->listed = true;
    }
  }
  std::lock_guard lock(mu_);
  DirHandle& d = *handle;
  Node* dir = FindNode(d.ino);
  if (dir == nullptr) return NotFound("unknown inode");
  std::vector<std::pair<std::string, EntryOut>> out;
  // Entries get their inode here; the caller confirms each one it sends with Remember().
  constexpr size_t kBatch = 512;
  for (uint64_t i = offset; i < d.entries.size() && out.size() < kBatch; ++i) {
    const auto& [name, attr] = d.entries[i];
    Ino ino = CurrentIno(d.ino, name);
    Node* n = ino ? FindNode(ino) : nullptr;
    bool pending = FindPending(JoinPath(Child(dir->path, name))) != nullptr;
    if (n == nullptr || n->pending != pending || !SameContent(n->attr, attr)) {
      ino = AddNode(d.ino, name, Child(dir->path, name), attr);
      n = FindNode(ino);
      n->pending = pending;
      if (pending) n->ws = FindPending(JoinPath(n->path))->ws;
      d.created.push_back(ino);
    }
    n->attr = attr;
    out.emplace_back(name, MakeEntry(ino, attr));
  }
  return out;
}

void Core::ReleaseDir(uint64_t dh) {
  std::lock_guard lock(mu_);
  auto it = dir_handles_.find(dh);
  if (it == dir_handles_.end()) return;
  // Nodes made for entries the kernel never took (nlookup 0) are dropped here.
  for (Ino ino : it->second->created) {
    Node* n = FindNode(ino);
    if (n != nullptr && n->nlookup == 0 && n->open_writers == 0) {
      DetachName(ino);
      EraseNode(ino);
    }
  }
  dir_handles_.erase(it);
}

Result<OpenOut> Core::Open(Ino ino, int flags) {
  Path path;
  std::shared_ptr<WriteState> ws;
  bool pending;
  NodeAttr attr;
  const bool write = (flags & O_ACCMODE) != O_RDONLY;
  {
    std::lock_guard lock(mu_);
    Node* n = FindNode(ino);
    if (n == nullptr) return NotFound("unknown inode");
    if (n->attr.type == NodeType::kDir) return IsADirectory(JoinPath(n->path) + ": is a folder");
    path = n->path;
    pending = n->pending;
    attr = n->attr;
    ws = n->ws;
  }
  auto h = std::make_shared<Handle>();
  h->ino = ino;
  h->write = write;
  OpenOut out;
  if (write) {
    if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
    ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
    if (!pending) RETURN_IF_ERROR(folder->CheckWritable(Rest(path)));
    std::lock_guard lock(mu_);
    Node* n = FindNode(ino);
    if (n == nullptr) return NotFound("unknown inode");
    if (!n->ws) {
      n->ws = std::make_shared<WriteState>();
      n->ws->folder_staging_dir = folder->staging_dir();
    }
    n->open_writers++;
    h->ws = n->ws;
    out.direct_io = true;  // writes bypass the page cache that readers of this inode share
  } else if (pending) {
    h->ws = ws;
    out.direct_io = true;
  } else {
    ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
    ASSIGN_OR_RETURN(NodeAttr now, folder->Stat(Rest(path)));
    ASSIGN_OR_RETURN(FileContent content, folder->Open(Rest(path)));
    h->content = std::make_shared<FileContent>(std::move(content));
    if (SameContent(now, attr)) {
      out.keep_cache = true;  // this inode's bytes never change
    } else {
      out.direct_io = true;  // changed since the kernel looked it up: do not fill its cache
    }
  }
  if (write && (flags & O_TRUNC)) {
    std::lock_guard wl(h->ws->mu);
    RETURN_IF_ERROR(EnsureStaged(path, *h->ws, true));
    if (ftruncate(h->ws->staged->fd(), 0) != 0) return ErrnoError("truncate", errno);
    h->ws->dirty = true;
  }
  std::lock_guard lock(mu_);
  out.fh = next_fh_++;
  handles_[out.fh] = std::move(h);
  return out;
}

Result<std::pair<EntryOut, OpenOut>> Core::Create(Ino parent, const std::string& name, mode_t mode,
                                                  int flags) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  if (path.size() < 2) return PermissionDenied(JoinPath(path) + ": files cannot be created here");
  if (StatPath(path).ok()) {
    if (flags & O_EXCL) return AlreadyExists(JoinPath(path) + ": exists");
    ASSIGN_OR_RETURN(EntryOut e, Lookup(parent, name));
    ASSIGN_OR_RETURN(OpenOut o, Open(e.attr.st_ino, flags | O_TRUNC));
    return std::make_pair(e, o);
  }
  if (!IsTemporaryName(name)) RETURN_IF_ERROR(folder->CheckWritable(Rest(path)));
  auto p = std::make_unique<Pending>();
  p->ws = std::make_shared<WriteState>();
  p->ws->folder_staging_dir = folder->staging_dir();
  ASSIGN_OR_RETURN(p->ws->staged, StagedFile::Create(folder->staging_dir()));
  p->ws->dirty = true;  // a created file is a change even when nothing is written into it
  p->mode = mode & 07777;
  p->uid = options_.uid;
  p->gid = options_.gid;
  p->mtime = Now();
  {
    std::lock_guard lock(mu_);
    pending_[JoinPath(path)] = std::move(p);
  }
  ASSIGN_OR_RETURN(EntryOut e, Lookup(parent, name));
  ASSIGN_OR_RETURN(OpenOut o, Open(e.attr.st_ino, flags & ~O_TRUNC));
  return std::make_pair(e, o);
}

Result<ReadOut> Core::Read(uint64_t fh, off_t offset, size_t size) {
  std::shared_ptr<Handle> h;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return InvalidArgument("unknown file handle");
    h = it->second;
  }
  ReadOut out;
  if (h->content) {
    uint64_t end = h->content->size;
    if (static_cast<uint64_t>(offset) >= end) return out;
    out.fd = h->content->fd.get();
    out.offset = offset;
    out.length = static_cast<size_t>(std::min<uint64_t>(size, end - offset));
    out.keep_alive = h->content;
    return out;
  }
  // Reading a staged file (O_RDWR, or a temporary file): copy out under its lock, since a later
  // write may replace the staged file.
  std::lock_guard wl(h->ws->mu);
  int fd = -1;
  std::optional<FileContent> committed;
  if (h->ws->staged) {
    fd = h->ws->staged->fd();
  } else {
    Path path;
    {
      std::lock_guard lock(mu_);
      Node* n = FindNode(h->ino);
      if (n == nullptr) return NotFound("unknown inode");
      path = n->path;
    }
    ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
    ASSIGN_OR_RETURN(FileContent c, folder->Open(Rest(path)));
    committed = std::move(c);
    fd = committed->fd.get();
  }
  auto buf = std::make_shared<std::string>(size, '\0');
  ASSIGN_OR_RETURN(size_t n, PreadFull(fd, buf->data(), size, offset));
  buf->resize(n);
  out.data = buf;
  out.length = n;
  return out;
}

Result<size_t> Core::Write(uint64_t fh, off_t offset, const char* data, size_t size) {
  return WriteWith(fh, offset, [&](int fd, off_t off) -> Result<size_t> {
    RETURN_IF_ERROR(PwriteFull(fd, data, size, off));
    return size;
  });
}

Result<size_t> Core::WriteWith(uint64_t fh, off_t offset, const PutFn& put) {
  std::shared_ptr<Handle> h;
  Path path;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return InvalidArgument("unknown file handle");
    h = it->second;
    Node* n = FindNode(h->ino);
    if (n != nullptr) path = n->path;
  }
  if (!h->write) return InvalidArgument("file not open for writing");
  std::lock_guard wl(h->ws->mu);
  RETURN_IF_ERROR(EnsureStaged(path, *h->ws, false));
  ASSIGN_OR_RETURN(size_t written, put(h->ws->staged->fd(), offset));
  h->ws->dirty = true;
  h->writes++;
  return written;
}

Status Core::Flush(uint64_t fh) {
  return FlushHandle(fh, /*at_release=*/false);
}

Status Core::FlushHandle(uint64_t fh, bool at_release) {
  std::shared_ptr<Handle> h;
  Path path;
  Ino parent = 0;
  std::string name;
  bool pending = false;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return InvalidArgument("unknown file handle");
    h = it->second;
    if (!h->write) return Status::Ok();
    // `cmd > file` opens, dup2s and closes the first descriptor before any byte is written: that
    // flush must not commit an empty version. A handle that wrote nothing commits at release, which
    // the kernel sends after close() returns; unless a time was set on it (`touch`, `cp -p` of an
    // empty file), which no redirection does: then close() returns after the commit, as it does
    // after writes.
    if (!at_release && h->writes == 0) {
      std::lock_guard wl(h->ws->mu);  // lock order: mu_ before WriteState::mu
      if (!h->ws->mtime) return Status::Ok();
    }
    Node* n = FindNode(h->ino);
    if (n == nullptr) return NotFound("unknown inode");
    path = n->path;
    parent = n->parent;
    name = n->name;
    pending = n->pending;
  }
  if (pending && IsTemporaryName(name)) return Status::Ok();  // commits when renamed
  Vanished vanished;
  Status st;
  bool changed = false;
  {
    std::lock_guard wl(h->ws->mu);
    if (!h->ws->dirty) return Status::Ok();
    const bool had_staged = h->ws->staged && !h->ws->staged->consumed();
    st = CommitState(path, *h->ws, &vanished);
    if (!st.ok()) {
      // Rejected: the store is as before, and so are later reads; the staged bytes are dropped.
      h->ws->staged.reset();
      h->ws->dirty = false;
    }
    changed = st.ok() && had_staged;
  }
  if (!st.ok()) {
    if (pending) {
      std::lock_guard lock(mu_);
      pending_.erase(JoinPath(path));
      DetachName(CurrentIno(parent, name));
    }
    if (pending && invalidator_) invalidator_->InvalidateEntry(parent, name, false);
    return st;
  }
  if (!changed) return Status::Ok();
  // (See Rename: folders whose commits change everything are not regenerated just to be stat'ed.)
  auto folder = FolderOf(path);
  const bool lazy = folder.ok() && (*folder)->MadeOnDemand(Rest(path));
  Result<NodeAttr> attr = lazy ? Result<NodeAttr>(NotFound("not looked up")) : StatPath(path);
  {
    std::lock_guard lock(mu_);
    Node* n = FindNode(h->ino);
    if (pending) {
      // A new file: its inode becomes the committed file (its pages were never cached).
      pending_.erase(JoinPath(path));
      if (n != nullptr) {
        n->pending = false;
        if (attr.ok() && attr->type == NodeType::kFile) n->attr = *attr;
        // Became another kind of entry (a link): fresh inode at the next lookup (see Rename).
        if (attr.ok() && attr->type != NodeType::kFile) vanished.push_back(Rest(path));
      }
    }
    // A committed file got new bytes: the name moves to a new inode at the next lookup; readers of the
    // old inode keep their snapshot and its cached pages.
    else if (n != nullptr && attr.ok() && !SameContent(n->attr, *attr)) DetachName(h->ino);
  }
  // Flush is not among the requests that hold the parent's lock, so waiting here is safe, and it
  // means the next open after close() sees the new bytes.
  if (invalidator_ && !pending) invalidator_->InvalidateEntry(parent, name, /*wait=*/true);
  InvalidateVanished({path[0]}, vanished);
  InvalidateListings(path, /*wait=*/true);
  return Status::Ok();
}

void Core::Release(uint64_t fh) {
  std::shared_ptr<Handle> h;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return;
    h = it->second;
  }
  if (h->write) {
    bool dirty;
    {
      std::lock_guard wl(h->ws->mu);
      dirty = h->ws->dirty;
    }
    // What no flush committed (a truncation alone, writes through a shared mapping) commits now; the
    // close has returned already, so an error can only be logged.
    if (dirty) {
      Status st = FlushHandle(fh, /*at_release=*/true);
      if (!st.ok()) LogError("commit at release: " + st.message());
    }
  }
  std::lock_guard lock(mu_);
  handles_.erase(fh);
  if (!h->write) return;
  Node* n = FindNode(h->ino);
  if (n == nullptr) return;
  if (--n->open_writers == 0 && !n->pending) n->ws.reset();
  if (n->nlookup == 0 && n->open_writers == 0) {
    DetachName(n->ino);
    EraseNode(n->ino);
  }
}

Status Core::Fsync(uint64_t fh, bool datasync) {
  std::shared_ptr<Handle> h;
  Path path;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return InvalidArgument("unknown file handle");
    h = it->second;
    Node* n = FindNode(h->ino);
    if (n != nullptr) path = n->path;
  }
  if (h->ws) {
    std::lock_guard wl(h->ws->mu);
    if (h->ws->staged && !h->ws->staged->consumed()) {
      int rc = datasync ? fdatasync(h->ws->staged->fd()) : fsync(h->ws->staged->fd());
      if (rc != 0) return ErrnoError("fsync of staged file", errno);
      h->ws->durable = true;  // the commit at close will be durable too
      return Status::Ok();
    }
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  return folder->Sync();
}

// Only user.* attributes exist here. Other namespaces (security.selinux, system.posix_acl_*) answer
// ENOTSUP rather than ENODATA: tools such as ls -l then stop asking for the rest of the filesystem,
// instead of paying two round trips per file.
static bool IsUserXattr(const std::string& name) { return name.rfind("user.", 0) == 0; }

Result<std::string> Core::GetXattr(Ino ino, const std::string& name) {
  if (!IsUserXattr(name)) return NotSupported("extended attribute " + name + ": only user.* exist here");
  if (name.rfind(kXattrPrefix, 0) != 0) return NotFound("no such attribute");
  Path path;
  {
    std::lock_guard lock(mu_);
    Node* n = FindNode(ino);
    if (n == nullptr) return NotFound("unknown inode");
    // The daemon's own state, on the mount's root: how many inodes it holds for the kernel.
    if (ino == kRootIno && name == kInodesXattr) return std::to_string(nodes_.size());
    if (n->pending || n->path.empty()) return NotFound("no such attribute");
    path = n->path;
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  ASSIGN_OR_RETURN(auto attrs, folder->Xattrs(Rest(path)));
  for (auto& [k, v] : attrs) {
    if (k == name) return v;
  }
  return NotFound("no such attribute");
}

Result<std::vector<std::string>> Core::ListXattr(Ino ino) {
  Path path;
  {
    std::lock_guard lock(mu_);
    Node* n = FindNode(ino);
    if (n == nullptr) return NotFound("unknown inode");
    if (ino == kRootIno) return std::vector<std::string>{kInodesXattr};
    if (n->pending || n->path.empty()) return std::vector<std::string>{};
    path = n->path;
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  ASSIGN_OR_RETURN(auto attrs, folder->Xattrs(Rest(path)));
  std::vector<std::string> names;
  for (auto& kv : attrs) names.push_back(kv.first);
  return names;
}

Status Core::SetXattr(Ino ino, const std::string& name, std::string_view value) {
  if (options_.read_only) return ReadOnly("mounted read-only");
  if (name.rfind(kXattrPrefix, 0) != 0) {
    return NotSupported("extended attribute " + name + ": only user.modelfs.* exist here");
  }
  Path path;
  std::shared_ptr<WriteState> ws;
  {
    std::lock_guard lock(mu_);
    Node* n = FindNode(ino);
    if (n == nullptr) return NotFound("unknown inode");
    if (n->path.size() < 2) return Status::Ok();  // the mount's own folders: nothing stored
    // A file being written keeps them for its commit (rsync -X sets them before the rename).
    if (n->ws && (n->pending || n->open_writers > 0)) {
      ws = n->ws;
    } else if (n->pending) {
      return Status::Ok();
    }
    path = n->path;
  }
  if (ws) {
    std::lock_guard wl(ws->mu);
    ws->xattrs[name] = std::string(value);
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  return folder->SetXattr(Rest(path), name, value);
}

Status Core::RemoveXattr(Ino ino, const std::string& name) {
  (void)ino;
  if (options_.read_only) return ReadOnly("mounted read-only");
  // Like setting them: accepted and not kept. Some derived attributes depend on how a store holds
  // an entry (a tensor stored as a delta has user.modelfs.delta_base; its restored copy may not), so
  // rsync -X removes them on restore and must not fail for it.
  if (name.rfind(kXattrPrefix, 0) == 0) return Status::Ok();
  return NotSupported("extended attribute " + name + ": only user.modelfs.* exist here");
}

Status Core::StatFs(struct statvfs* out) {
  if (folders_.empty()) return NotFound("no folders");
  if (statvfs(folders_[0]->staging_dir().c_str(), out) != 0) return ErrnoError("statvfs", errno);
  out->f_namemax = kMaxNameLength;
  return Status::Ok();
}

Status Core::SyncAll() {
  Status first;
  for (auto& f : folders_) {
    Status st = f->Sync();
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

}  // namespace modelfs::fs
