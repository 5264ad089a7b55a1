#include "fs/core.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <tuple>

#include "fs/log.h"
#include "fs/staging.h"
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

// A folder's key in DirTimes; the root's is "/".
std::string DirTimesKey(const Path& p) { return p.empty() ? "/" : JoinPath(p); }

// A committed file's bytes never change under its inode; a folder's do (its listing).
bool SameContent(const NodeAttr& a, const NodeAttr& b) {
  return a.type == b.type && (a.type == NodeType::kDir || a.version == b.version);
}

// Names the file in a rejection's message unless the folder already did, so that every log line of a
// refused write says which file it was.
Status Named(const Status& st, const Path& path) {
  const std::string where = JoinPath(path);
  if (st.ok() || st.message().find(where) != std::string::npos) return st;
  return st.Annotate(where);
}

constexpr size_t kMaxNameLength = 255;
constexpr char kXattrPrefix[] = "user.modelfs.";
constexpr char kInodesXattr[] = "user.modelfs.inodes";
// A retrying open comes within microseconds; a reservation older than this was abandoned.
constexpr auto kReservationLife = std::chrono::seconds(10);

}  // namespace

// A file or folder that exists only in the core: a file being created (until its first commit), a
// temporary file ('.' name, until renamed onto a real name), a folder made before the store has it.
struct Core::Pending {
  bool is_dir = false;
  // Files: the process creating it. While it writes, a new file exists for that process only (other
  // processes see what the store has: nothing, or what another writer committed meanwhile). Unknown
  // (everyone's) once closed uncommitted: a temporary file waiting for its rename.
  ProcessId creator;
  std::shared_ptr<Staging> staging;  // files
  uint64_t owner = 0;                // the write handle staging it (0: none open)
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  timespec mtime{};                  // folders
};

struct Core::Handle {
  Ino ino = 0;
  bool write = false;
  bool direct_io = false;
  ProcessId opener;
  std::shared_ptr<FileContent> content;  // read handles of stored files: the snapshot
  std::shared_ptr<Staging> staging;      // write handles, and reads of a file being written
  // (mu_) Where its commit goes: the path it was opened at (follows a rename of a pending file).
  Path path;
  Ino parent = 0;
  std::string name;
  bool pending = false;   // (mu_) its staging is the pending entry's at path
  bool detached = false;  // (mu_) its name was removed or replaced: a commit would bring it back
};

struct Core::DirHandle {
  std::mutex list_mu;
  bool listed = false;                                    // (list_mu)
  std::vector<std::pair<std::string, NodeAttr>> entries;  // (list_mu) set once, then constant
  Path path;                                              // constant
  Ino ino = 0;
  std::vector<Ino> created;  // (mu_) nodes made for a plain readdir: dropped at release if unused
};

// What one request asks the kernel to forget. Collected while the request runs, sent at its end.
class Core::Notes {
 public:
  void Entry(Ino parent, std::string name) { entries_.emplace_back(parent, std::move(name)); }
  void Attributes(Ino ino, bool listing) { attrs_.emplace_back(ino, listing); }
  bool empty() const { return entries_.empty() && attrs_.empty(); }

 private:
  friend class Core;
  std::vector<std::pair<Ino, std::string>> entries_;
  std::vector<std::pair<Ino, bool>> attrs_;
};

Core::Core(std::vector<std::unique_ptr<Folder>> folders, CoreOptions options)
    : options_(std::move(options)),
      folders_(std::move(folders)),
      start_time_(Now()),
      processes_(options_.process_of, options_.process_alive),
      invalidations_(std::make_unique<InvalidationQueue>(nullptr)) {
  if (options_.root_mtime) start_time_ = *options_.root_mtime;
  table_.Find(kRootIno)->attr.mtime = start_time_;
  // The top folders' inode numbers follow their listing order, whatever is looked up first: cp -a
  // copies a folder's entries in inode order, and restores need models/neurons before synapses/.
  for (auto& f : folders_) table_.NumberDir({std::string(f->name())});
  auto times = DirTimes::Open(options_.dir_times_file);
  if (!times.ok()) {
    LogError(options_.dir_times_file + ": " + times.status().message() +
             " (folder times set by rsync or cp -a are kept in memory only)");
    times = DirTimes::Open("");
  }
  dir_times_ = std::move(*times);
}

Core::~Core() = default;

void Core::SetKernelCache(KernelCache* kernel) {
  invalidations_.reset();  // sends what the previous one had queued
  invalidations_ = std::make_unique<InvalidationQueue>(kernel);
}

void Core::DrainInvalidations() { invalidations_->Drain(); }

size_t Core::node_count() {
  std::lock_guard lock(mu_);
  return table_.size();
}

// ---------------------------------------------------------------------------------------------
// Names and nodes

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
  Node* p = table_.Find(parent);
  if (p == nullptr) return NotFound("unknown inode");
  if (p->attr.type != NodeType::kDir) return NotADirectory(JoinPath(p->path) + ": not a folder");
  return Child(p->path, name);
}

bool Core::SeesPending(const Caller* viewer, const ProcessId& creator) {
  if (viewer == nullptr || !creator.known()) return true;
  return Who(*viewer) == creator;
}

void Core::ShowDirTime(const Path& path, NodeAttr& attr) {
  if (attr.type != NodeType::kDir) return;
  attr.mtime = dir_times_->Shown(DirTimesKey(path), attr.mtime, [&] { return NamesIn(path); });
}

Result<uint64_t> Core::NamesIn(const Path& path) {
  ASSIGN_OR_RETURN(auto entries, ListEntries(path));
  std::vector<std::string> names;
  names.reserve(entries.size());
  for (auto& e : entries) {
    // Temporary files (rsync's .name.XXXXXX on its way in) are not the folder's content.
    if (!IsTemporaryName(e.first)) names.push_back(std::move(e.first));
  }
  return DirTimes::NamesHash(std::move(names));
}

Result<NodeAttr> Core::StatPath(const Path& path, const Caller* viewer, bool* from_pending) {
  ASSIGN_OR_RETURN(NodeAttr attr, OwnStat(path, viewer, from_pending));
  ShowDirTime(path, attr);
  return attr;
}

Result<NodeAttr> Core::OwnStat(const Path& path, const Caller* viewer, bool* from_pending) {
  if (from_pending != nullptr) *from_pending = false;
  if (path.empty()) {
    NodeAttr a;
    a.type = NodeType::kDir;
    a.mtime = start_time_;
    return a;
  }
  std::shared_ptr<Staging> staging;
  std::optional<timespec> provisional;  // a pending folder's time
  ProcessId creator;
  {
    std::lock_guard lock(mu_);
    Pending* p = FindPending(JoinPath(path));
    if (p != nullptr && p->is_dir) provisional = p->mtime;
    if (p != nullptr && !p->is_dir) {
      staging = p->staging;
      creator = p->creator;
    }
  }
  if (staging && !SeesPending(viewer, creator)) staging.reset();
  if (!staging && !provisional && IsTemporaryName(path.back())) {
    return NotFound(JoinPath(path) + ": no such file");
  }
  if (staging) {
    if (from_pending != nullptr) *from_pending = true;
    NodeAttr a;
    a.type = NodeType::kFile;
    a.writable = true;
    std::lock_guard sl(staging->mu);
    auto size = staging->Size();
    if (size.ok()) a.size = *size;
    a.mtime = staging->Mtime();
    return a;
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
  if (from_pending != nullptr) *from_pending = true;
  NodeAttr a;
  a.type = NodeType::kDir;
  a.mtime = *provisional;
  return a;
}

struct stat Core::MakeStat(const Node& n, const NodeAttr& attr) {
  struct stat st {};
  st.st_ino = n.ino;
  st.st_uid = options_.uid;
  st.st_gid = options_.gid;
  switch (attr.type) {
    case NodeType::kDir:
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
      break;
    case NodeType::kFile:
      st.st_mode = S_IFREG | (attr.writable && !options_.read_only ? 0644 : 0444);
      st.st_nlink = n.removed ? 0 : 1;
      break;
    case NodeType::kSymlink:
      st.st_mode = S_IFLNK | 0777;
      st.st_nlink = 1;
      break;
  }
  if (n.kind == NodeKind::kPending && attr.type == NodeType::kFile) {
    if (const Pending* p = FindPending(JoinPath(n.path))) {
      st.st_mode = S_IFREG | (p->mode & 07777);
      st.st_uid = p->uid;
      st.st_gid = p->gid;
    }
  }
  st.st_size = static_cast<off_t>(attr.size);
  st.st_blksize = 128 * 1024;
  st.st_blocks = static_cast<blkcnt_t>((attr.size + 511) / 512);
  st.st_mtim = attr.mtime;
  st.st_ctim = attr.ctime.tv_sec || attr.ctime.tv_nsec ? attr.ctime : attr.mtime;
  st.st_atim = attr.mtime;
  return st;
}

EntryOut Core::MakeEntry(const Node& n) {
  EntryOut e;
  e.attr = MakeStat(n, n.attr);
  if (n.kind == NodeKind::kPending || n.kind == NodeKind::kWriter) {
    // Sizes that move with every write, and names that lead elsewhere for other processes.
    e.entry_timeout = 0;
    e.attr_timeout = 0;
  } else if (n.attr.type == NodeType::kDir) {
    e.entry_timeout = options_.entry_timeout;
    e.attr_timeout = options_.dir_attr_timeout;
  } else {
    e.entry_timeout = options_.entry_timeout;
    e.attr_timeout = options_.attr_timeout;
  }
  return e;
}

Node* Core::Remember(Ino parent, const std::string& name, const Path& path, const NodeAttr& attr,
                     bool pending) {
  const NodeKind kind = pending ? NodeKind::kPending : NodeKind::kStored;
  Node* n = table_.Find(table_.Current(parent, name));
  if (n != nullptr && n->attr.type == NodeType::kDir && attr.type == NodeType::kDir) {
    n->kind = kind;  // a folder keeps its inode, also when a provisional one becomes the store's
  } else if (n == nullptr || n->kind != kind || !SameContent(n->attr, attr)) {
    n = table_.Add(parent, name, path, kind, attr, /*attach=*/true);
    if (pending) n->staging = FindPending(JoinPath(path))->staging;
  }
  n->attr = attr;
  n->nlookup++;
  return n;
}

Result<EntryOut> Core::Lookup(const Caller& caller, Ino parent, const std::string& name) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  {
    // The retry of an open refused with ESTALE: this thread gets the inode kept for it.
    std::lock_guard lock(mu_);
    auto r = reservations_.find(caller.tid);
    if (r != reservations_.end() && r->second.parent == parent && r->second.name == name) {
      r->second.looked_up = true;
      if (Node* w = table_.Find(r->second.writer)) {
        w->nlookup++;
        return MakeEntry(*w);
      }
    }
  }
  if (HiddenFrom(caller, path)) return NotFound(JoinPath(path) + ": not created by this process yet");
  bool pending = false;
  auto found = StatPath(path, &caller, &pending);
  if (!found.ok()) {
    // A name that cannot exist does not exist: creating it then says precisely why it is refused.
    if (found.status().code() == StatusCode::kInvalidArgument) return NotFound(found.status().message());
    return found.status();
  }
  // The retry of a read refused with ESTALE: the bytes of the version this lookup returns are taken
  // now, consistently (Reservation::snapshot), a few times over if commits keep coming.
  std::shared_ptr<FileContent> snapshot;
  bool read_retry = false;
  {
    std::lock_guard lock(mu_);
    auto r = reservations_.find(caller.tid);
    read_retry = !pending && found->type == NodeType::kFile && r != reservations_.end() &&
                 r->second.writer == 0 && r->second.parent == parent && r->second.name == name;
  }
  if (read_retry) {
    ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
    for (int attempt = 0; attempt < 8 && !snapshot; ++attempt) {
      auto before = folder->Stat(Rest(path));
      if (!before.ok() || before->type != NodeType::kFile) break;
      auto content = folder->Open(Rest(path));
      auto after = folder->Stat(Rest(path));
      if (content.ok() && after.ok() && SameContent(*before, *after) && content->size == after->size) {
        snapshot = std::make_shared<FileContent>(std::move(*content));
        ShowDirTime(path, *after);
        found = *after;
      }
    }
  }
  std::lock_guard lock(mu_);
  Node* n = Remember(parent, name, path, *found, pending);
  if (snapshot) {
    auto r = reservations_.find(caller.tid);
    if (r != reservations_.end()) {
      r->second.snapshot = std::move(snapshot);
      r->second.snapshot_ino = n->ino;
    }
  }
  return MakeEntry(*n);
}

void Core::Forget(Ino ino, uint64_t nlookup) {
  std::lock_guard lock(mu_);
  Node* n = table_.Find(ino);
  if (n == nullptr || ino == kRootIno) return;
  n->nlookup = nlookup >= n->nlookup ? 0 : n->nlookup - nlookup;
  table_.EraseIfUnused(ino);
}

Result<AttrOut> Core::GetAttr(Ino ino) {
  Path path;
  NodeAttr attr;
  NodeKind kind;
  bool attached;
  std::shared_ptr<Staging> staging;
  {
    std::lock_guard lock(mu_);
    Node* n = table_.Find(ino);
    if (n == nullptr) return NotFound("unknown inode");
    path = n->path;
    attr = n->attr;
    kind = n->kind;
    attached = n->attached;
    staging = n->staging;
  }
  if (staging && (kind == NodeKind::kPending || kind == NodeKind::kWriter)) {
    // A file being written: what its writer has written so far.
    std::lock_guard sl(staging->mu);
    auto size = staging->Size();
    if (size.ok()) attr.size = *size;
    attr.mtime = staging->Mtime();
    attr.ctime = staging->changed;
  } else if (attr.type == NodeType::kDir && (attached || kind == NodeKind::kRoot)) {
    // A folder's attributes change with its listing; a stored file's never change under its inode.
    auto fresh = StatPath(path);
    if (fresh.ok() && fresh->type == NodeType::kDir) attr = *fresh;
  }
  std::lock_guard lock(mu_);
  Node* n = table_.Find(ino);
  if (n == nullptr) return NotFound("unknown inode");
  if (kind != NodeKind::kPending && kind != NodeKind::kWriter) n->attr = attr;
  EntryOut e = MakeEntry(*n);
  e.attr = MakeStat(*n, attr);
  return AttrOut{e.attr, e.attr_timeout};
}

// ---------------------------------------------------------------------------------------------
// Processes

ProcessId Core::Who(const Caller& caller) { return processes_.Of(caller.tid); }

bool Core::HiddenFrom(const Caller& caller, const Path& path, std::optional<bool> creating) {
  {
    std::lock_guard lock(mu_);
    if (views_.empty()) return false;  // the common case asks /proc nothing
  }
  ProcessId p = Who(caller);
  ProcessViews::Hiding hiding;
  {
    std::lock_guard lock(mu_);
    hiding = views_.Hidden(p, JoinPath(path));
  }
  if (hiding != ProcessViews::Hiding::kBelowRoot) return hiding == ProcessViews::Hiding::kWhiteout;
  if (!creating) creating = options_.creating ? options_.creating(caller.tid)
                                              : ProcessTable::CreatingFromProc(caller.tid);
  return *creating;
}

void Core::ViewCreated(const Caller& caller, const Path& path) {
  {
    std::lock_guard lock(mu_);
    if (views_.empty()) return;
  }
  ProcessId p = Who(caller);
  std::lock_guard lock(mu_);
  views_.Created(p, JoinPath(path));
}

void Core::PruneViews() {
  const auto now = std::chrono::steady_clock::now();
  if (now - views_pruned_ < std::chrono::seconds(1)) return;
  views_.Prune([&](const ProcessId& p, int pin) { return processes_.Alive(p, pin); });
  views_pruned_ = now;
}

void Core::Reserve(pid_t tid, Ino parent, const std::string& name, Ino refused, Ino writer) {
  ExpireReservations();
  auto old = reservations_.find(tid);
  if (old != reservations_.end() && old->second.writer != 0 && old->second.writer != writer) {
    if (Node* w = table_.Find(old->second.writer)) {
      w->reserved = false;
      table_.EraseIfUnused(w->ino);
    }
  }
  Reservation r;
  r.parent = parent;
  r.name = name;
  r.refused = refused;
  r.writer = writer;
  r.at = std::chrono::steady_clock::now();
  reservations_[tid] = r;
  if (Node* w = table_.Find(writer)) w->reserved = true;
}

bool Core::IsFailedRetry(pid_t tid, Ino ino) {
  auto r = reservations_.find(tid);
  if (r == reservations_.end()) return false;
  const Reservation& res = r->second;
  // The kernel retries once: a second ESTALE would reach the program. Served instead: the retry that
  // could not look the name up again (the same inode, no lookup between: /proc/self/fd/N), and the
  // retry whose fresh inode went stale too before its open arrived (another commit in between).
  if (res.refused == ino) return !res.looked_up;
  if (res.writer == ino) return false;  // the private inode kept for this retry
  if (!res.looked_up || std::chrono::steady_clock::now() - res.at > std::chrono::seconds(1)) return false;
  Node* n = table_.Find(ino);
  return n != nullptr && n->parent == res.parent && n->name == res.name;
}

void Core::ExpireReservations() {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = reservations_.begin(); it != reservations_.end();) {
    if (now - it->second.at < kReservationLife) {
      ++it;
      continue;
    }
    if (Node* w = table_.Find(it->second.writer)) {
      w->reserved = false;
      table_.EraseIfUnused(w->ino);
    }
    it = reservations_.erase(it);
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel caches

void Core::NoteListings(const Path& path, Notes& notes) {
  if (path.empty()) return;
  std::lock_guard lock(mu_);
  for (Ino ino : table_.DirsBelow(path, 2)) notes.Attributes(ino, /*listing=*/true);
}

void Core::NoteVanished(const std::string& folder_top, const Vanished& vanished, Notes& notes) {
  // Drops the names of every stored file of top-level folder `top`: their next lookup is afresh.
  auto forget_all_files = [&](const std::string& top) {
    std::lock_guard lock(mu_);
    for (Ino ino : table_.StoredFilesIn(top)) {
      Node* n = table_.Find(ino);
      notes.Entry(n->parent, n->name);
      table_.Detach(ino);
    }
  };
  auto folder = FolderOf({folder_top});
  if (folder.ok() && (*folder)->CommitsChangeEverything()) forget_all_files(folder_top);
  Vanished all = vanished;
  if (folder.ok()) {
    for (Path& d : (*folder)->Derived()) all.push_back(std::move(d));
  }
  std::vector<std::string> other_folders;  // listings to drop: a side effect reached them
  for (const Path& rel : all) {
    Path full;
    if (!rel.empty() && rel[0] == "/") {
      if (rel.size() < 2) continue;
      full.assign(rel.begin() + 1, rel.end());
      if (full[0] != folder_top) other_folders.push_back(full[0]);
    } else {
      full = {folder_top};
      full.insert(full.end(), rel.begin(), rel.end());
    }
    if (full.size() == 2 && full[1] == "*") {
      forget_all_files(full[0]);
      continue;
    }
    std::lock_guard lock(mu_);
    Ino ino = kRootIno;
    for (const auto& c : full) {
      ino = table_.Current(ino, c);
      if (ino == 0) break;
    }
    Node* n = ino ? table_.Find(ino) : nullptr;
    if (n == nullptr) continue;
    notes.Entry(n->parent, n->name);  // for a folder, the kernel drops what it cached below it too
    notes.Attributes(n->ino, n->attr.type == NodeType::kDir);
    // A file's name leads to a new inode. A folder keeps its inode, and its number when the kernel
    // looks it up again (InodeTable: tar compares a folder's inode before and after it fills it).
    if (n->attr.type != NodeType::kDir) table_.Detach(n->ino);
  }
  for (const std::string& top : other_folders) NoteListings({top}, notes);
}

void Core::Send(Notes& notes, std::initializer_list<Ino> held) {
  if (notes.empty()) return;
  auto is_held = [&](Ino parent) { return std::find(held.begin(), held.end(), parent) != held.end(); };
  // What can be waited for goes first (invalidation.h, rule 2).
  uint64_t ticket = 0;
  for (const auto& [ino, listing] : notes.attrs_) ticket = invalidations_->Attributes(ino, listing);
  for (const auto& [parent, name] : notes.entries_) {
    if (!is_held(parent)) ticket = invalidations_->Entry(parent, name);
  }
  for (const auto& [parent, name] : notes.entries_) {
    if (is_held(parent)) invalidations_->Entry(parent, name);
  }
  if (ticket != 0) invalidations_->Wait(ticket, options_.invalidation_wait);
}

// ---------------------------------------------------------------------------------------------
// Opening, reading, writing

uint64_t Core::AddHandle(std::shared_ptr<Handle> h) {
  uint64_t fh = next_fh_++;
  if (h->write) writers_.emplace(JoinPath(h->path), fh);
  if (Node* n = table_.Find(h->ino)) n->open++;
  handles_[fh] = std::move(h);
  return fh;
}

Result<OpenOut> Core::Open(const Caller& caller, Ino ino, int flags) {
  if ((flags & O_ACCMODE) != O_RDONLY) return OpenForWrite(caller, ino, flags);
  return OpenForRead(caller, ino);
}

Result<OpenOut> Core::OpenForRead(const Caller& caller, Ino ino) {
  Path path;
  NodeAttr attr;
  NodeKind kind;
  Ino parent;
  std::string name;
  std::shared_ptr<Staging> staging;
  {
    std::lock_guard lock(mu_);
    Node* n = table_.Find(ino);
    if (n == nullptr) return NotFound("unknown inode");
    if (n->attr.type == NodeType::kDir) return IsADirectory(JoinPath(n->path) + ": is a folder");
    path = n->path;
    attr = n->attr;
    kind = n->kind;
    parent = n->parent;
    name = n->name;
    staging = n->staging;
  }
  auto h = std::make_shared<Handle>();
  h->ino = ino;
  h->path = path;
  h->parent = parent;
  h->name = name;
  OpenOut out;
  if (kind == NodeKind::kPending || kind == NodeKind::kWriter) {
    // A file being written, opened to read: its bytes so far, from its staged file.
    if (!staging) staging = std::make_shared<Staging>("");
    h->staging = staging;
    out.direct_io = true;
  } else {
    {
      // The retry after ESTALE opens the inode its lookup returned, with that lookup's snapshot.
      std::lock_guard lock(mu_);
      auto r = reservations_.find(caller.tid);
      if (r != reservations_.end() && r->second.snapshot && r->second.snapshot_ino == ino) {
        h->content = std::move(r->second.snapshot);
        reservations_.erase(r);
        out.keep_cache = true;
        out.fh = AddHandle(std::move(h));
        return out;
      }
    }
    ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
    // An inode stands for one content version. If the name has moved on (a commit since the kernel
    // looked it up), ESTALE makes the kernel look the path up again and retry once; only when that
    // retry could not look up again is the newest content served here, bypassing this inode's cache.
    bool stale = false;
    {
      auto now = folder->Stat(Rest(path));
      if (!now.ok() && now.status().code() != StatusCode::kNotFound) return now.status();
      stale = !now.ok() || !SameContent(*now, attr);
    }
    FileContent content;
    if (!stale) {
      ASSIGN_OR_RETURN(content, folder->Open(Rest(path)));
      // A commit between the check and the open would put another version's bytes under this inode.
      auto now = folder->Stat(Rest(path));
      stale = !now.ok() || !SameContent(*now, attr) || content.size != attr.size;
    }
    if (stale) {
      std::lock_guard lock(mu_);
      if (!IsFailedRetry(caller.tid, ino)) {
        Reserve(caller.tid, parent, name, ino, 0);
        return Stale(JoinPath(path) + ": changed since it was looked up");
      }
    }
    if (stale) {
      ASSIGN_OR_RETURN(content, folder->Open(Rest(path)));
      out.direct_io = true;
    } else {
      out.keep_cache = true;  // this inode's bytes never change
    }
    h->content = std::make_shared<FileContent>(std::move(content));
  }
  std::lock_guard lock(mu_);
  out.fh = AddHandle(std::move(h));
  return out;
}

Result<OpenOut> Core::OpenForWrite(const Caller& caller, Ino ino, int flags) {
  Path path;
  NodeKind kind;
  NodeAttr attr;
  Ino parent;
  std::string name;
  bool reserved_for_me = false;
  bool failed_retry = false;
  std::shared_ptr<Staging> pending_staging;  // a pending file nobody writes: taken over
  bool pending_busy = false;
  {
    std::lock_guard lock(mu_);
    Node* n = table_.Find(ino);
    if (n == nullptr) return NotFound("unknown inode");
    if (n->attr.type == NodeType::kDir) return IsADirectory(JoinPath(n->path) + ": is a folder");
    path = n->path;
    kind = n->kind;
    attr = n->attr;
    parent = n->parent;
    name = n->name;
    auto r = reservations_.find(caller.tid);
    reserved_for_me = kind == NodeKind::kWriter && r != reservations_.end() && r->second.writer == ino;
    failed_retry = IsFailedRetry(caller.tid, ino);
    if (kind == NodeKind::kPending) {
      Pending* p = FindPending(JoinPath(path));
      if (p != nullptr && !p->is_dir) {
        pending_busy = p->owner != 0;
        if (!pending_busy) pending_staging = p->staging;
      }
    }
  }
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  const bool truncate = flags & O_TRUNC;
  const bool shares_inode = kind == NodeKind::kStored || (kind == NodeKind::kWriter && !reserved_for_me) ||
                            (kind == NodeKind::kPending && pending_busy);
  if (shares_inode && !failed_retry) {
    // Readers (or another writer) use this inode: refuse with ESTALE and keep a private inode for this
    // thread's retry, which looks the name up again (Lookup) and opens that one.
    if (kind == NodeKind::kStored) RETURN_IF_ERROR(folder->CheckWritable(Rest(path)));
    std::lock_guard lock(mu_);
    NodeAttr wattr = attr;
    wattr.writable = true;
    if (kind != NodeKind::kStored) wattr.size = 0;  // a second writer of a new file starts empty
    Node* w = table_.Add(parent, name, path, NodeKind::kWriter, wattr, /*attach=*/false);
    Reserve(caller.tid, parent, name, ino, w->ino);
    return Stale(JoinPath(path) + ": opened for writing: retry on a private inode");
  }
  if (failed_retry) {
    LogInfo(JoinPath(path) + ": opened for writing without a path to look up again (/proc/self/fd?): "
            "it shares its inode with readers until it closes");
  }
  auto h = std::make_shared<Handle>();
  h->ino = ino;
  h->write = true;
  h->opener = Who(caller);
  h->path = path;
  h->parent = parent;
  h->name = name;
  // O_WRONLY writes bypass the page cache (nothing there to keep); O_RDWR goes through this private
  // inode's cache, so that its reads see its writes and mmap(MAP_SHARED) works (numpy.memmap r+).
  h->direct_io = (flags & O_ACCMODE) == O_WRONLY || failed_retry;
  if (pending_staging) {
    h->staging = pending_staging;
    h->pending = true;
  } else {
    h->staging = std::make_shared<Staging>(folder->staging_dir());
    if (!truncate && kind != NodeKind::kPending &&
        (kind == NodeKind::kStored || attr.size > 0 || failed_retry)) {
      // The stored bytes as they are now: what this writer changes (copied at its first write).
      auto base = folder->Open(Rest(path));
      if (base.ok()) {
        h->staging->base = std::make_shared<FileContent>(std::move(*base));
      } else if (base.status().code() != StatusCode::kNotFound) {
        return base.status();
      }
    }
  }
  if (truncate) {
    std::lock_guard sl(h->staging->mu);
    RETURN_IF_ERROR(h->staging->Ensure(/*truncate=*/true));
    if (ftruncate(h->staging->staged->fd(), 0) != 0) return ErrnoError(JoinPath(path) + ": truncate", errno);
    h->staging->dirty = true;
    h->staging->Touch();
  }
  std::lock_guard lock(mu_);
  Node* n = table_.Find(ino);
  if (n == nullptr) return NotFound("unknown inode");
  if (reserved_for_me) {
    reservations_.erase(caller.tid);
    n->reserved = false;
  }
  if (!failed_retry) n->staging = h->staging;
  OpenOut out;
  out.direct_io = h->direct_io;
  const bool pending = h->pending;
  out.fh = AddHandle(h);
  if (pending) {
    if (Pending* p = FindPending(JoinPath(path))) p->owner = out.fh;
  }
  return out;
}

Result<std::pair<EntryOut, OpenOut>> Core::Create(const Caller& caller, Ino parent, const std::string& name,
                                                  mode_t mode, int flags) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  if (path.size() < 2) return PermissionDenied(JoinPath(path) + ": files cannot be created here");
  const bool hidden = HiddenFrom(caller, path, /*creating=*/true);
  auto existing = StatPath(path, &caller);
  if (existing.ok() && existing->type == NodeType::kDir) {
    return hidden ? PermissionDenied(JoinPath(path) + ": a folder of the store")
                  : IsADirectory(JoinPath(path) + ": is a folder");
  }
  bool others_pending;  // another process is creating this name: this one creates its own
  {
    std::lock_guard lock(mu_);
    Pending* p = FindPending(JoinPath(path));
    others_pending = !existing.ok() && p != nullptr && !p->is_dir;
  }
  const ProcessId by = Who(caller);
  auto h = std::make_shared<Handle>();
  h->write = true;
  h->opener = by;
  h->path = path;
  h->parent = parent;
  h->name = name;
  h->direct_io = (flags & O_ACCMODE) != O_RDWR;
  EntryOut entry;
  if (existing.ok() || others_pending) {
    if ((flags & O_EXCL) && existing.ok() && !hidden) return AlreadyExists(JoinPath(path) + ": exists");
    // The name exists (another process created it meanwhile, or it is one this process does not see,
    // or another process is creating it): this file is a private writer of it, as an open for
    // writing would be, and the last of them to close wins.
    if (!hidden && !(others_pending && IsTemporaryName(name))) {
      RETURN_IF_ERROR(folder->CheckWritable(Rest(path)));
    }
    h->staging = std::make_shared<Staging>(folder->staging_dir());
    if (hidden || others_pending) {
      h->staging->dirty = true;  // a new file for this process, stored at close even if empty
    } else if (!(flags & O_TRUNC)) {
      auto base = folder->Open(Rest(path));
      if (base.ok()) h->staging->base = std::make_shared<FileContent>(std::move(*base));
    }
    if (flags & O_TRUNC || hidden || others_pending) {
      std::lock_guard sl(h->staging->mu);
      RETURN_IF_ERROR(h->staging->Ensure(/*truncate=*/true));
      h->staging->dirty = true;
    }
    NodeAttr wattr;
    wattr.type = NodeType::kFile;
    wattr.writable = true;
    wattr.mtime = Now();
    std::lock_guard lock(mu_);
    Node* w = table_.Add(parent, name, path, NodeKind::kWriter, wattr, /*attach=*/false);
    w->staging = h->staging;
    w->nlookup++;
    h->ino = w->ino;
    entry = MakeEntry(*w);
  } else {
    if (existing.status().code() != StatusCode::kNotFound &&
        existing.status().code() != StatusCode::kInvalidArgument) {
      return existing.status();
    }
    if (!IsTemporaryName(name)) RETURN_IF_ERROR(folder->CheckWritable(Rest(path)));
    auto p = std::make_unique<Pending>();
    p->staging = std::make_shared<Staging>(folder->staging_dir());
    {
      std::lock_guard sl(p->staging->mu);
      RETURN_IF_ERROR(p->staging->Ensure(/*truncate=*/true));
      p->staging->dirty = true;  // a created file is a change even when nothing is written into it
    }
    p->mode = mode & 07777;
    p->uid = options_.uid;
    p->gid = options_.gid;
    p->creator = by;
    h->staging = p->staging;
    h->pending = true;
    NodeAttr attr;
    attr.type = NodeType::kFile;
    attr.writable = true;
    attr.mtime = Now();
    std::lock_guard lock(mu_);
    pending_[JoinPath(path)] = std::move(p);
    Node* n = table_.Add(parent, name, path, NodeKind::kPending, attr, /*attach=*/true);
    n->staging = h->staging;
    n->nlookup++;
    h->ino = n->ino;
    entry = MakeEntry(*n);
  }
  ViewCreated(caller, path);
  std::lock_guard lock(mu_);
  OpenOut out;
  out.direct_io = h->direct_io;
  const bool pending = h->pending;
  out.fh = AddHandle(h);
  if (pending) {
    if (Pending* p = FindPending(JoinPath(path))) p->owner = out.fh;
  }
  return std::make_pair(entry, out);
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
  // A file being written: copied out under its lock, since a later write may replace the staged file.
  std::lock_guard sl(h->staging->mu);
  if (!h->direct_io) h->staging->cached_io = true;
  int fd = h->staging->ReadFd();
  if (fd < 0) return out;
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
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return InvalidArgument("unknown file handle");
    h = it->second;
  }
  if (!h->write) return InvalidArgument("file not open for writing");
  Staging& s = *h->staging;
  std::lock_guard sl(s.mu);
  if (!s.error.ok()) return s.error;
  RETURN_IF_ERROR(s.Ensure(/*truncate=*/false));
  ASSIGN_OR_RETURN(size_t written, put(s.staged->fd(), offset));
  s.dirty = true;
  s.unsaved_changes++;
  if (!h->direct_io) s.cached_io = true;
  s.Touch();
  return written;
}

// ---------------------------------------------------------------------------------------------
// Commit

void Core::DetachWriters(const std::string& key) {
  auto range = writers_.equal_range(key);
  for (auto it = range.first; it != range.second; ++it) {
    auto h = handles_.find(it->second);
    if (h != handles_.end()) h->second->detached = true;
  }
}

Status Core::CommitStaging(const Path& path, Ino parent, const std::string& name, Staging& s,
                           bool pending, bool adopt, const ProcessId& by, Notes& notes) {
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  const Path rest = Rest(path);
  Vanished vanished;
  Status st;
  bool changed = true;
  if (s.staged && !s.staged->consumed()) {
    CommitContext ctx;
    ctx.mtime = s.mtime;
    ctx.durable = s.durable;
    ctx.xattrs.assign(s.xattrs.begin(), s.xattrs.end());
    st = folder->Commit(rest, *s.staged, ctx, &vanished);
  } else if (s.time_set && s.mtime && !pending) {
    // Only a time was set on a stored file (touch): it is the file's new time, not a new version.
    st = folder->SetMtime(rest, *s.mtime, &vanished);
    vanished.push_back(rest);
  } else {
    changed = false;
  }
  if (!st.ok()) {
    // Rejected: the store is as before; so is the file for its next reader. The open file keeps the
    // error for every later close (sticky), and a file that existed only here is gone.
    st = Named(st, path);
    LogError("rejected: " + st.message());  // once; later closes return it without a new line
    s.error = st;
    s.DropStaged();
    std::lock_guard lock(mu_);
    if (pending) {
      pending_.erase(JoinPath(path));
      Ino ino = table_.Current(parent, name);
      if (Node* n = table_.Find(ino); n != nullptr && n->kind == NodeKind::kPending) {
        n->removed = true;
        table_.Detach(ino);
        notes.Entry(parent, name);
      }
    }
    return st;
  }
  s.dirty = false;
  s.unsaved_changes = 0;
  s.time_set = false;
  s.mtime.reset();
  s.xattrs.clear();
  if (!changed) return Status::Ok();
  // A file made on demand (a view, an export) would be regenerated just to stat it: its name is
  // dropped instead and looked up afresh when next used.
  const bool lazy = folder->MadeOnDemand(rest);
  // (The store's own stat: `s` is locked here, and a pending entry's stat would lock it again.)
  Result<NodeAttr> attr = lazy ? Result<NodeAttr>(NotFound("not looked up")) : folder->Stat(rest);
  {
    std::lock_guard lock(mu_);
    views_.Created(by, JoinPath(path));
    Node* n = table_.Find(table_.Current(parent, name));
    if (pending) {
      pending_.erase(JoinPath(path));
      // The new file's inode becomes the stored file when nobody can write through it any more (readers
      // would share it), nothing of it can be in the page cache that differs from the stored bytes
      // (it was written around the cache) and it is still a file. Otherwise the next lookup makes one.
      if (n != nullptr && n->kind == NodeKind::kPending) {
        if (adopt && attr.ok() && attr->type == NodeType::kFile && !s.cached_io) {
          n->kind = NodeKind::kStored;
          n->attr = *attr;
          n->staging.reset();
        } else {
          table_.Detach(n->ino);
          notes.Entry(parent, name);
        }
      }
    } else if (n != nullptr && (!attr.ok() || !SameContent(n->attr, *attr))) {
      // New bytes: the name leads to a new inode at the next lookup; readers of the old one keep
      // their snapshot and its cached pages.
      table_.Detach(n->ino);
      notes.Entry(parent, name);
    } else if (n != nullptr && attr.ok()) {
      n->attr = *attr;  // same bytes, maybe a new time
      notes.Attributes(n->ino, false);
    }
  }
  NoteVanished(path[0], vanished, notes);
  NoteListings(path, notes);
  return Status::Ok();
}

Status Core::Flush(const Caller& caller, uint64_t fh) {
  std::shared_ptr<Handle> h;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return InvalidArgument("unknown file handle");
    h = it->second;
  }
  if (!h->write) return Status::Ok();
  // Only a close by the process that opened the file commits (threads of it included). A process
  // that inherited the descriptor (`{ a; b; } > f`, a fork, exec closing O_CLOEXEC descriptors)
  // leaves it to the opener's close, or to the release after the last close.
  const ProcessId by = Who(caller);
  const bool opener = by.known() ? by == h->opener : !h->opener.known();
  if (!opener) {
    std::lock_guard sl(h->staging->mu);
    return h->staging->error;
  }
  return FinishHandle(fh, /*at_release=*/false, by);
}

Status Core::FinishHandle(uint64_t fh, bool at_release, const ProcessId& by) {
  std::shared_ptr<Handle> h;
  Path path;
  Ino parent;
  std::string name;
  bool pending, detached;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return InvalidArgument("unknown file handle");
    h = it->second;
    path = h->path;
    parent = h->parent;
    name = h->name;
    pending = h->pending && FindPending(JoinPath(path)) != nullptr;
    detached = h->detached;
  }
  Notes notes;
  Status st;
  {
    Staging& s = *h->staging;
    std::lock_guard sl(s.mu);
    if (!s.error.ok()) return s.error;
    // `cmd > file` opens, dup2s and closes the first descriptor before any byte is written: that close
    // must not store an empty version. A handle that changed nothing since its last commit commits
    // at release; unless a time was set on it (`touch`, `cp -p` of an empty file), which no
    // redirection does.
    if (!at_release && s.unsaved_changes == 0 && !s.time_set) return Status::Ok();
    if (detached) {
      s.DropStaged();  // its name was removed or replaced meanwhile: nothing to bring back
      return Status::Ok();
    }
    if (pending && IsTemporaryName(name)) return Status::Ok();  // commits when renamed
    if (!s.dirty && !s.time_set) return Status::Ok();
    bool adopt = false;
    if (at_release) {
      std::lock_guard lock(mu_);
      adopt = writers_.count(JoinPath(path)) <= 1;  // this handle is the file's last writer
    }
    st = CommitStaging(path, parent, name, s, pending, adopt, by, notes);
  }
  Send(notes, {});
  return st;
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
    // What no close committed (a truncation alone, writes by a process that inherited the descriptor,
    // writes through a shared mapping) commits now; close has returned already, so an error can only
    // be logged (and stays the open file's error for nobody).
    // (A rejection was logged where it happened.)
    FinishHandle(fh, /*at_release=*/true, h->opener).IgnoreError();
  }
  std::lock_guard lock(mu_);
  handles_.erase(fh);
  if (h->write) {
    auto range = writers_.equal_range(JoinPath(h->path));
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second == fh) {
        writers_.erase(it);
        break;
      }
    }
    if (Pending* p = FindPending(JoinPath(h->path)); p != nullptr && p->owner == fh) {
      // Closed and not committed (a temporary file waiting for its rename): everyone's now, as a
      // script's `mv .tmp name` runs in another process.
      p->owner = 0;
      p->creator = ProcessId{};
    }
  }
  Node* n = table_.Find(h->ino);
  if (n == nullptr) return;
  n->open--;
  table_.EraseIfUnused(n->ino);
}

Status Core::Fsync(uint64_t fh, bool datasync) {
  std::shared_ptr<Handle> h;
  Path path;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return InvalidArgument("unknown file handle");
    h = it->second;
    path = h->path;
  }
  if (h->write) {
    std::lock_guard sl(h->staging->mu);
    if (!h->staging->error.ok()) return h->staging->error;
    if (h->staging->staged && !h->staging->staged->consumed()) {
      int rc = datasync ? fdatasync(h->staging->staged->fd()) : fsync(h->staging->staged->fd());
      if (rc != 0) return ErrnoError(JoinPath(path) + ": fsync of staged file", errno);
      h->staging->durable = true;  // the commit at close will be durable too
      return Status::Ok();
    }
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  return folder->Sync();
}

// ---------------------------------------------------------------------------------------------
// Attributes

Result<AttrOut> Core::SetAttr(const Caller& caller, Ino ino, const SetAttrIn& in) {
  Path path;
  NodeKind kind;
  NodeAttr attr;
  Ino parent;
  std::string name;
  std::shared_ptr<Staging> target;  // the staged file this change belongs to, if any
  {
    std::lock_guard lock(mu_);
    Node* n = table_.Find(ino);
    if (n == nullptr) return NotFound("unknown inode");
    path = n->path;
    kind = n->kind;
    attr = n->attr;
    parent = n->parent;
    name = n->name;
    if (in.fh) {
      auto it = handles_.find(*in.fh);
      if (it != handles_.end() && it->second->write) target = it->second->staging;
    }
    if (!target && (kind == NodeKind::kPending || kind == NodeKind::kWriter)) target = n->staging;
    if (kind == NodeKind::kPending) {
      Pending* p = FindPending(JoinPath(path));
      if (p != nullptr) {
        if (in.mode) p->mode = *in.mode & 07777;
        if (in.uid) p->uid = *in.uid;
        if (in.gid) p->gid = *in.gid;
        if (in.mtime && p->is_dir) p->mtime = *in.mtime;
      }
    }
  }
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  const bool is_dir = attr.type == NodeType::kDir;
  Notes notes;
  if (in.size) {
    if (is_dir) return IsADirectory(JoinPath(path) + ": is a folder");
    if (target) {
      std::lock_guard sl(target->mu);
      if (!target->error.ok()) return target->error;
      RETURN_IF_ERROR(target->Ensure(*in.size == 0));
      if (ftruncate(target->staged->fd(), static_cast<off_t>(*in.size)) != 0) {
        return ErrnoError(JoinPath(path) + ": truncate", errno);
      }
      target->dirty = true;
      target->unsaved_changes++;
      target->Touch();
    } else if (kind == NodeKind::kStored) {
      // truncate(2) by path of a stored file: a whole write, committed at once. The inode keeps its
      // bytes and size (readers may hold it); the name leads to the new version.
      ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
      RETURN_IF_ERROR(folder->CheckWritable(Rest(path)));
      Staging tmp(folder->staging_dir());
      std::lock_guard sl(tmp.mu);
      if (*in.size != 0) {
        ASSIGN_OR_RETURN(FileContent base, folder->Open(Rest(path)));
        tmp.base = std::make_shared<FileContent>(std::move(base));
      }
      RETURN_IF_ERROR(tmp.Ensure(*in.size == 0));
      if (ftruncate(tmp.staged->fd(), static_cast<off_t>(*in.size)) != 0) {
        return ErrnoError(JoinPath(path) + ": truncate", errno);
      }
      tmp.dirty = true;
      RETURN_IF_ERROR(CommitStaging(path, parent, name, tmp, false, false, Who(caller), notes));
    } else {
      return NotFound(JoinPath(path) + ": no such file");
    }
  }
  if (in.mtime) {
    if (target) {
      // A time set on a file being written (rsync before its rename, cp -p and tar through the open
      // descriptor) is kept with the staged bytes and becomes the version's time at commit.
      std::lock_guard sl(target->mu);
      target->mtime = *in.mtime;
      target->time_set = true;
      target->changed = Now();
    } else if (is_dir && (kind == NodeKind::kStored || kind == NodeKind::kRoot)) {
      // A folder's time (rsync -a, cp -a, tar -x set them last): the folder keeps it or not (SetMtime);
      // if its own time stays, the time set is shown instead until its listing changes (dir_times.h).
      if (!path.empty()) {
        ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
        Vanished vanished;
        RETURN_IF_ERROR(folder->SetMtime(Rest(path), *in.mtime, &vanished));
        NoteVanished(path[0], vanished, notes);
      }
      ASSIGN_OR_RETURN(NodeAttr own, OwnStat(path, nullptr, nullptr));
      if (NanosFromTimespec(own.mtime) != NanosFromTimespec(*in.mtime)) {
        ASSIGN_OR_RETURN(uint64_t names, NamesIn(path));
        RETURN_IF_ERROR(dir_times_->Set(DirTimesKey(path), own.mtime, *in.mtime, names));
      }
    } else if (kind == NodeKind::kStored && path.size() > 1) {
      ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
      Vanished vanished;
      RETURN_IF_ERROR(folder->SetMtime(Rest(path), *in.mtime, &vanished));
      // Usually the inode keeps its content version and only its time moves. A file whose bytes show
      // its time (a JSON document with "modified_at") has new content: its name moves to a new inode.
      auto fresh = StatPath(path);
      {
        std::lock_guard lock(mu_);
        Node* n = table_.Find(ino);
        if (n != nullptr && fresh.ok() && SameContent(n->attr, *fresh)) {
          n->attr = *fresh;
        } else if (n != nullptr && n->attached) {
          table_.Detach(ino);
          notes.Entry(parent, name);
        }
      }
      NoteVanished(path[0], vanished, notes);
    }
  }
  // Modes and owners of stored entries are the store's: changing them is accepted (so that rsync -a,
  // cp -p and tar -p work) and not kept. Pending files keep them until their commit.
  Send(notes, {is_dir ? ino : 0});
  return GetAttr(ino);
}

Result<std::string> Core::ReadLink(Ino ino) {
  Path path;
  {
    std::lock_guard lock(mu_);
    Node* n = table_.Find(ino);
    if (n == nullptr) return NotFound("unknown inode");
    path = n->path;
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  return folder->ReadLink(Rest(path));
}

// ---------------------------------------------------------------------------------------------
// Names: links, folders, removal, renames

Result<EntryOut> Core::Symlink(const Caller& caller, Ino parent, const std::string& name,
                               const std::string& target) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  if (IsTemporaryName(name)) {
    return InvalidArgument(JoinPath(path) + ": link names cannot start with '.' (temporary names)");
  }
  if (path.size() < 2) return PermissionDenied(JoinPath(path) + ": the top-level folders are fixed");
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  const bool hidden = HiddenFrom(caller, path, /*creating=*/true);
  if (!hidden && StatPath(path).ok()) return AlreadyExists(JoinPath(path) + ": exists");
  Vanished vanished;
  RETURN_IF_ERROR(folder->MakeSymlink(Rest(path), target, &vanished));
  ViewCreated(caller, path);
  Notes notes;
  NoteVanished(path[0], vanished, notes);
  NoteListings(path, notes);
  Send(notes, {parent});
  return Lookup(caller, parent, name);
}

Result<EntryOut> Core::MakeDir(const Caller& caller, Ino parent, const std::string& name) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  if (IsTemporaryName(name)) return InvalidArgument(JoinPath(path) + ": folder names cannot start with '.'");
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  if (path.size() == 1) return AlreadyExists(path[0] + ": exists");
  const bool hidden = HiddenFrom(caller, path, /*creating=*/true);
  auto existing = StatPath(path);
  if (existing.ok() && !hidden) return AlreadyExists(JoinPath(path) + ": exists");
  if (existing.ok() && existing->type != NodeType::kDir) {
    return AlreadyExists(JoinPath(path) + ": exists (a file of the store)");
  }
  Notes notes;
  if (!existing.ok()) {
    ASSIGN_OR_RETURN(MkdirOutcome outcome, folder->MakeDir(Rest(path)));
    std::lock_guard lock(mu_);
    if (outcome == MkdirOutcome::kProvisional) {
      auto p = std::make_unique<Pending>();
      p->is_dir = true;
      p->mtime = Now();
      pending_[JoinPath(path)] = std::move(p);
    }
  }
  // A folder that this process makes and that the store fills by itself (models/<id>) looks empty to
  // this process until it creates what is in it (process_views.h).
  if (!existing.ok() && folder->MakeDirFillsIt(Rest(path))) {
    ProcessId by = Who(caller);
    int pin = processes_.Pin(by);
    std::lock_guard lock(mu_);
    PruneViews();
    views_.HideBelow(by, JoinPath(path), pin);
  }
  ViewCreated(caller, path);
  NoteListings(path, notes);
  Send(notes, {parent});
  bool pending = false;
  ASSIGN_OR_RETURN(NodeAttr attr, StatPath(path, &caller, &pending));
  std::lock_guard lock(mu_);
  Node* n = Remember(parent, name, path, attr, pending);
  return MakeEntry(*n);
}

Status Core::MakeSpecial(Ino parent, const std::string& name, mode_t mode) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (S_ISREG(mode)) {
    return NotSupported(JoinPath(path) + ": create regular files with open(O_CREAT), not mknod");
  }
  return PermissionDenied(JoinPath(path) + ": special files (fifos, sockets, devices) cannot be stored");
}

Status Core::HardLink(Ino ino, Ino new_parent, const std::string& new_name) {
  (void)ino;
  ASSIGN_OR_RETURN(Path path, ChildPath(new_parent, new_name));
  return PermissionDenied(JoinPath(path) + ": hard links are not supported (use a symbolic link)");
}

Status Core::Unlink(const Caller& caller, Ino parent, const std::string& name) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  if (HiddenFrom(caller, path, /*creating=*/false)) return NotFound(JoinPath(path) + ": no such file");
  const std::string key = JoinPath(path);
  ProcessId creator;
  {
    std::lock_guard lock(mu_);
    if (Pending* p = FindPending(key); p != nullptr && !p->is_dir) creator = p->creator;
  }
  const bool sees_pending = SeesPending(&caller, creator);
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(key);
    if (it != pending_.end() && (it->second->is_dir || sees_pending)) {
      if (it->second->is_dir) return IsADirectory(key + ": is a folder");
      pending_.erase(it);
      DetachWriters(key);  // an open writer of a removed file stores nothing (create-unlink-use)
      Ino ino = table_.Current(parent, name);
      if (Node* n = table_.Find(ino)) n->removed = true;
      table_.Detach(ino);
      return Status::Ok();
    }
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  if (path.size() == 1) return PermissionDenied(path[0] + ": store folders cannot be removed");
  const bool automatic = folder->IsAutomatic(Rest(path));
  Vanished vanished;
  RETURN_IF_ERROR(folder->Remove(Rest(path), &vanished));
  const ProcessId by = automatic ? Who(caller) : ProcessId{};
  const int pin = automatic ? processes_.Pin(by) : -1;
  const Path dir(path.begin(), path.end() - 1);
  const bool dir_gone = dir.size() > 1 && !StatPath(dir).ok();
  Notes notes;
  {
    std::lock_guard lock(mu_);
    Ino ino = table_.Current(parent, name);
    if (automatic) {
      // Still there for everyone else; gone for this process until it creates it again (tar -x).
      PruneViews();
      views_.Whiteout(by, key, pin);
      if (ino != 0) notes.Attributes(ino, false);
    } else {
      DetachWriters(key);
      if (Node* n = table_.Find(ino)) n->removed = true;
    }
    table_.Detach(ino);
    if (dir_gone) {
      // Removing the last file of a derived folder (history/<n>) would make the folder vanish under
      // `rm -r`, whose rmdir comes next: like any folder, it stays until it is removed.
      auto p = std::make_unique<Pending>();
      p->is_dir = true;
      p->mtime = Now();
      pending_[JoinPath(dir)] = std::move(p);
    }
  }
  NoteVanished(path[0], vanished, notes);
  NoteListings(path, notes);
  Send(notes, {parent});
  return Status::Ok();
}

Status Core::RemoveDir(const Caller& caller, Ino parent, const std::string& name) {
  ASSIGN_OR_RETURN(Path path, ChildPath(parent, name));
  if (options_.read_only) return ReadOnly(JoinPath(path) + ": mounted read-only");
  if (HiddenFrom(caller, path, /*creating=*/false)) return NotFound(JoinPath(path) + ": no such folder");
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
      table_.Detach(table_.Current(parent, name));
      return Status::Ok();
    }
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  if (path.size() == 1) return PermissionDenied(path[0] + ": store folders cannot be removed");
  Vanished vanished;
  RETURN_IF_ERROR(folder->RemoveDir(Rest(path), &vanished));
  {
    std::lock_guard lock(mu_);
    table_.Detach(table_.Current(parent, name));
  }
  Notes notes;
  NoteVanished(path[0], vanished, notes);
  NoteListings(path, notes);
  Send(notes, {parent});
  return Status::Ok();
}

Status Core::Rename(const Caller& caller, Ino parent, const std::string& name, Ino new_parent,
                    const std::string& new_name, unsigned flags) {
  ASSIGN_OR_RETURN(Path from, ChildPath(parent, name));
  ASSIGN_OR_RETURN(Path to, ChildPath(new_parent, new_name));
  if (options_.read_only) return ReadOnly(JoinPath(from) + ": mounted read-only");
  if (flags & RENAME_EXCHANGE) return NotSupported(JoinPath(from) + ": exchanging names is not supported");
  if (from.size() < 2 || to.size() < 2) return PermissionDenied("store folders cannot be renamed");
  if (from[0] != to[0]) return NotSupported("cross-folder rename: " + JoinPath(from));
  const std::string from_key = JoinPath(from), to_key = JoinPath(to);
  if (from_key == to_key) return Status::Ok();
  if (HiddenFrom(caller, from, /*creating=*/false)) return NotFound(from_key + ": no such file");
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(from));
  const bool dst_exists = StatPath(to).ok();
  if ((flags & RENAME_NOREPLACE) && dst_exists) return AlreadyExists(to_key + ": exists");

  std::shared_ptr<Staging> staging;
  ProcessId creator;
  {
    std::lock_guard lock(mu_);
    if (Pending* p = FindPending(from_key); p != nullptr && !p->is_dir) creator = p->creator;
  }
  const bool sees_pending = SeesPending(&caller, creator);
  {
    std::lock_guard lock(mu_);
    Pending* p = FindPending(from_key);
    if (p != nullptr && !p->is_dir && !sees_pending) p = nullptr;
    if (p != nullptr) {
      if (p->is_dir) return NotSupported(from_key + ": renaming folders is not supported");
      staging = p->staging;
      if (IsTemporaryName(new_name)) {
        // One temporary name to another: nothing reaches the store; open writers follow the file.
        DetachWriters(to_key);
        pending_.erase(to_key);
        pending_[to_key] = std::move(pending_[from_key]);
        pending_.erase(from_key);
        std::vector<uint64_t> moved;
        auto range = writers_.equal_range(from_key);
        for (auto it = range.first; it != range.second; ++it) moved.push_back(it->second);
        writers_.erase(from_key);
        for (uint64_t fh : moved) {
          writers_.emplace(to_key, fh);
          if (auto h = handles_.find(fh); h != handles_.end()) {
            h->second->path = to;
            h->second->parent = new_parent;
            h->second->name = new_name;
          }
        }
        table_.Move(table_.Current(parent, name), new_parent, new_name, to);
        return Status::Ok();
      }
    }
  }
  Notes notes;
  if (!staging) {
    Vanished vanished;
    RETURN_IF_ERROR(folder->Rename(Rest(from), Rest(to), &vanished));
    auto attr = StatPath(to);
    {
      std::lock_guard lock(mu_);
      DetachWriters(to_key);
      DetachWriters(from_key);
      // The kernel moved its dentry onto the renamed inode, and may ask it (readlink) before any
      // lookup: the inode now stands for `to`. If what `to` is differs from what the inode was, it
      // keeps the new path but loses the name, so the next lookup makes a fresh inode.
      Node* n = table_.Move(table_.Current(parent, name), new_parent, new_name, to);
      if (n != nullptr && (!attr.ok() || attr->type != n->attr.type || !SameContent(n->attr, *attr))) {
        table_.Detach(n->ino);
        notes.Entry(new_parent, new_name);
      } else if (n != nullptr) {
        n->attr = *attr;
      }
    }
    ViewCreated(caller, to);
    NoteVanished(from[0], vanished, notes);
    NoteListings(to, notes);
    Send(notes, {parent, new_parent});
    return Status::Ok();
  }
  // A staged file renamed onto a real name: this is its commit (rsync's .name.XXXXXX -> name).
  RETURN_IF_ERROR(folder->CheckWritable(Rest(to)));
  Status st;
  {
    std::lock_guard sl(staging->mu);
    if (!staging->error.ok()) return staging->error;
    std::lock_guard lock(mu_);
    // The file is committed under its new name: the kernel already moved its dentry to this inode.
    DetachWriters(to_key);
    pending_[to_key] = std::move(pending_[from_key]);
    pending_.erase(from_key);
    std::vector<uint64_t> moved;
    auto range = writers_.equal_range(from_key);
    for (auto it = range.first; it != range.second; ++it) moved.push_back(it->second);
    writers_.erase(from_key);
    for (uint64_t fh : moved) {
      writers_.emplace(to_key, fh);
      if (auto h = handles_.find(fh); h != handles_.end()) {
        h->second->path = to;
        h->second->parent = new_parent;
        h->second->name = new_name;
      }
    }
    table_.Move(table_.Current(parent, name), new_parent, new_name, to);
  }
  {
    std::lock_guard sl(staging->mu);
    bool adopt;
    {
      std::lock_guard lock(mu_);
      adopt = writers_.count(to_key) == 0;  // rsync closes its temporary file before the rename
    }
    st = CommitStaging(to, new_parent, new_name, *staging, /*pending=*/true, adopt, Who(caller), notes);
  }
  if (!st.ok()) {
    // Rejected (a bad file under a valid name): the temporary file is gone with it, as the store is
    // unchanged; rsync reports the error and keeps its own copy.
    Send(notes, {parent, new_parent});
    return st;
  }
  ViewCreated(caller, to);
  Send(notes, {parent, new_parent});
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Listings

Result<uint64_t> Core::OpenDir(Ino ino) {
  auto dh = std::make_shared<DirHandle>();
  std::lock_guard lock(mu_);
  Node* n = table_.Find(ino);
  if (n == nullptr) return NotFound("unknown inode");
  if (n->attr.type != NodeType::kDir) return NotADirectory(JoinPath(n->path) + ": not a folder");
  dh->path = n->path;
  dh->ino = ino;
  uint64_t id = next_fh_++;
  dir_handles_[id] = std::move(dh);
  return id;
}

Result<std::vector<std::pair<std::string, NodeAttr>>> Core::ListEntries(const Path& path) {
  std::vector<std::pair<std::string, NodeAttr>> entries;
  if (path.empty()) {
    for (auto& f : folders_) {
      ASSIGN_OR_RETURN(NodeAttr a, f->Stat({}));
      ShowDirTime({std::string(f->name())}, a);
      entries.emplace_back(std::string(f->name()), a);
    }
    return entries;
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  (void)OwnStat(path, nullptr, nullptr);  // drops the provisional entry if the store has the folder now
  bool provisional;
  {
    std::lock_guard lock(mu_);
    provisional = FindPending(JoinPath(path)) != nullptr;
  }
  if (!provisional) {
    ASSIGN_OR_RETURN(auto listed, folder->List(Rest(path)));
    entries.reserve(listed.size());
    for (auto& e : listed) {
      if (e.attr.type == NodeType::kDir) ShowDirTime(Child(path, e.name), e.attr);
      entries.emplace_back(std::move(e.name), e.attr);
    }
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
    // Not a file being written: it exists for its creator alone, and the kernel shares listings
    // between processes.
    bool from_pending = false;
    Caller nobody;
    auto a = StatPath(c, &nobody, &from_pending);
    if (!a.ok() || !from_pending) continue;
    auto same = std::find_if(entries.begin(), entries.end(),
                             [&](const auto& e) { return e.first == c.back(); });
    if (same == entries.end()) entries.emplace_back(c.back(), *a);
  }
  return entries;
}

Result<std::vector<std::pair<std::string, EntryOut>>> Core::ReadDir(uint64_t dh, uint64_t offset,
                                                                     bool plus) {
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
  Node* dir = table_.Find(d.ino);
  if (dir == nullptr) return NotFound("unknown inode");
  const Path dir_path = dir->path;
  std::vector<std::pair<std::string, EntryOut>> out;
  constexpr size_t kBatch = 512;
  for (uint64_t i = offset; i < d.entries.size() && out.size() < kBatch; ++i) {
    const auto& [name, attr] = d.entries[i];
    // The reference readdirplus gives the kernel is taken here, under the same lock that finds the
    // node, so that a FORGET can never drop it between the two.
    const Path path = Child(dir_path, name);
    const Pending* p = FindPending(JoinPath(path));
    const bool pending = p != nullptr && (p->is_dir ? attr.type == NodeType::kDir : !p->creator.known());
    Node* n = Remember(d.ino, name, path, attr, pending);
    if (!plus) {
      n->nlookup--;
      d.created.push_back(n->ino);
    }
    out.emplace_back(name, MakeEntry(*n));
  }
  return out;
}

void Core::ReleaseDir(uint64_t dh) {
  std::lock_guard lock(mu_);
  auto it = dir_handles_.find(dh);
  if (it == dir_handles_.end()) return;
  for (Ino ino : it->second->created) table_.EraseIfUnused(ino);
  dir_handles_.erase(it);
}

// ---------------------------------------------------------------------------------------------
// Extended attributes

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
    Node* n = table_.Find(ino);
    if (n == nullptr) return NotFound("unknown inode");
    // The daemon's own state, on the mount's root: how many inodes it holds for the kernel.
    if (ino == kRootIno && name == kInodesXattr) return std::to_string(table_.size());
    if (n->kind == NodeKind::kPending || n->kind == NodeKind::kWriter || n->path.empty()) {
      return NotFound("no such attribute");
    }
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
    Node* n = table_.Find(ino);
    if (n == nullptr) return NotFound("unknown inode");
    // The daemon's own state (user.modelfs.inodes) is read by name, not listed: a backup of the root
    // must not carry it.
    if (ino == kRootIno) return std::vector<std::string>{};
    if (n->kind == NodeKind::kPending || n->kind == NodeKind::kWriter || n->path.empty()) {
      return std::vector<std::string>{};
    }
    path = n->path;
  }
  ASSIGN_OR_RETURN(Folder * folder, FolderOf(path));
  ASSIGN_OR_RETURN(auto attrs, folder->Xattrs(Rest(path)));
  std::vector<std::string> names;
  for (auto& kv : attrs) {
    if (folder->ListsXattr(Rest(path), kv.first)) names.push_back(kv.first);
  }
  return names;
}

Status Core::SetXattr(Ino ino, const std::string& name, std::string_view value) {
  if (options_.read_only) return ReadOnly("mounted read-only");
  if (name.rfind(kXattrPrefix, 0) != 0) {
    return NotSupported("extended attribute " + name + ": only user.modelfs.* exist here");
  }
  Path path;
  std::shared_ptr<Staging> staging;
  {
    std::lock_guard lock(mu_);
    Node* n = table_.Find(ino);
    if (n == nullptr) return NotFound("unknown inode");
    if (n->path.size() < 2) return Status::Ok();  // the mount's own folders: nothing stored
    if (n->kind == NodeKind::kPending || n->kind == NodeKind::kWriter) {
      staging = n->staging;
      if (!staging) return Status::Ok();
    }
    path = n->path;
  }
  if (staging) {
    // A file being written keeps them for its commit (rsync -X sets them before the rename).
    std::lock_guard sl(staging->mu);
    staging->xattrs[name] = std::string(value);
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
