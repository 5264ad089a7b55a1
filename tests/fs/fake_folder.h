// FakeFolder: a Folder kept in memory, so that the core's rules are tested without a store or kernel.
//
//   <dir>/                 a folder made with mkdir; MakeDir fills it (MakeDirFillsIt) with an
//                          automatic file "meta" and an automatic folder "sub/", as models/<id> does
//   <dir>/.../<file>       any file; its bytes are the last commit's; "meta" is automatic (Remove
//                          clears it, it stays)
// Commits of bytes starting with "BAD" are rejected (InvalidArgument); names containing "bad" are not
// writable (InvalidArgument). Every commit bumps the file's version. Thread-safe (one mutex).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <set>
#include <string>

#include "fs/folder.h"
#include "stores/common/file_util.h"

namespace modelfs::fs::testing {

class FakeFolder : public Folder {
 public:
  FakeFolder(std::string name, std::string staging) : name_(std::move(name)), staging_(std::move(staging)) {}
  std::string_view name() const override { return name_; }
  const std::string& staging_dir() const override { return staging_; }

  Result<NodeAttr> Stat(const Path& p) override {
    std::lock_guard lock(mu_);
    return StatLocked(p);
  }
  Result<std::vector<DirEntry>> List(const Path& dir) override {
    std::lock_guard lock(mu_);
    ASSIGN_OR_RETURN(NodeAttr a, StatLocked(dir));
    if (a.type != NodeType::kDir) return NotADirectory(Where(dir) + ": a file");
    std::vector<DirEntry> out;
    const std::string prefix = dir.empty() ? "" : JoinPath(dir) + "/";
    for (const auto& d : dirs_) {
      if (IsChild(d, prefix)) out.push_back({d.substr(prefix.size()), *StatLocked(Split(d))});
    }
    for (const auto& [f, file] : files_) {
      if (IsChild(f, prefix)) out.push_back({f.substr(prefix.size()), *StatLocked(Split(f))});
    }
    return out;
  }
  Result<FileContent> Open(const Path& p) override {
    std::lock_guard lock(mu_);
    auto it = files_.find(JoinPath(p));
    if (it == files_.end()) return NotFound(Where(p) + ": no such file");
    ++opens_;
    return MemoryFileContent(it->second.bytes);
  }
  Status CheckWritable(const Path& p) override {
    std::lock_guard lock(mu_);
    if (p.empty()) return IsADirectory(name_ + ": a folder");
    if (p.back().find("bad") != std::string::npos) return InvalidArgument(Where(p) + ": a bad name");
    Path parent(p.begin(), p.end() - 1);
    if (!parent.empty() && !dirs_.count(JoinPath(parent))) return NotFound(Where(parent) + ": no folder");
    if (dirs_.count(JoinPath(p))) return IsADirectory(Where(p) + ": a folder");
    return Status::Ok();
  }
  Status Commit(const Path& p, StagedFile& staged, const CommitContext& ctx, Vanished* vanished) override {
    (void)vanished;
    RETURN_IF_ERROR(CheckWritable(p));
    ASSIGN_OR_RETURN(uint64_t size, staged.Size());
    std::string bytes(size, '\0');
    ASSIGN_OR_RETURN(size_t n, PreadFull(staged.fd(), bytes.data(), size, 0));
    bytes.resize(n);
    if (bytes.rfind("BAD", 0) == 0) return InvalidArgument(Where(p) + ": content starts with BAD");
    std::lock_guard lock(mu_);
    File& f = files_[JoinPath(p)];
    if (f.version != 0 && f.bytes == bytes && !ctx.mtime) return Status::Ok();  // nothing changes
    f.bytes = bytes;
    f.version = ++versions_;
    f.mtime = ctx.mtime ? *ctx.mtime : Now();
    ++commits_;
    return Status::Ok();
  }
  Status Remove(const Path& p, Vanished* vanished) override {
    (void)vanished;
    std::lock_guard lock(mu_);
    auto it = files_.find(JoinPath(p));
    if (it == files_.end()) return NotFound(Where(p) + ": no such file");
    if (IsAutomatic(p)) {
      it->second.bytes.clear();  // cleared, stays
      it->second.version = ++versions_;
      return Status::Ok();
    }
    files_.erase(it);
    return Status::Ok();
  }
  Result<MkdirOutcome> MakeDir(const Path& p) override {
    std::lock_guard lock(mu_);
    const std::string key = JoinPath(p);
    if (dirs_.count(key) || files_.count(key)) return AlreadyExists(Where(p) + ": exists");
    dirs_.insert(key);
    if (p.size() == 1) {
      // What the store adds to a new top folder by itself, as models/<id> gets meta and layers/.
      files_[key + "/meta"] = File{"", ++versions_, Now()};
      dirs_.insert(key + "/sub");
    }
    return MkdirOutcome::kCreated;
  }
  Status RemoveDir(const Path& p, Vanished* vanished) override {
    (void)vanished;
    std::lock_guard lock(mu_);
    dirs_.erase(JoinPath(p));
    return Status::Ok();
  }
  bool IsAutomatic(const Path& p) const override { return p.size() == 2 && p[1] == "meta"; }
  bool MakeDirFillsIt(const Path& p) const override { return p.size() == 1; }
  Status Sync() override { return Status::Ok(); }

  // For assertions.
  std::string Bytes(const std::string& path) {
    std::lock_guard lock(mu_);
    auto it = files_.find(path);
    return it == files_.end() ? "<none>" : it->second.bytes;
  }
  bool Has(const std::string& path) {
    std::lock_guard lock(mu_);
    return files_.count(path) > 0;
  }
  int commits() {
    std::lock_guard lock(mu_);
    return commits_;
  }
  void AddDir(const std::string& path) {
    std::lock_guard lock(mu_);
    dirs_.insert(path);
  }
  void Put(const std::string& path, const std::string& bytes) {
    std::lock_guard lock(mu_);
    files_[path] = File{bytes, ++versions_, Now()};
  }

 private:
  struct File {
    std::string bytes;
    uint64_t version = 0;
    timespec mtime{};
  };
  static timespec Now() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts;
  }
  static Path Split(const std::string& s) {
    Path p;
    size_t at = 0;
    while (at <= s.size()) {
      size_t slash = s.find('/', at);
      if (slash == std::string::npos) slash = s.size();
      p.push_back(s.substr(at, slash - at));
      at = slash + 1;
    }
    return p;
  }
  static bool IsChild(const std::string& path, const std::string& prefix) {
    return path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
           path.find('/', prefix.size()) == std::string::npos;
  }
  std::string Where(const Path& p) const { return name_ + "/" + JoinPath(p); }
  Result<NodeAttr> StatLocked(const Path& p) {
    NodeAttr a;
    if (p.empty() || dirs_.count(JoinPath(p))) {
      a.type = NodeType::kDir;
      return a;
    }
    auto it = files_.find(JoinPath(p));
    if (it == files_.end()) return NotFound(Where(p) + ": no such entry");
    a.type = NodeType::kFile;
    a.size = it->second.bytes.size();
    a.mtime = it->second.mtime;
    a.version = it->second.version;
    a.writable = true;
    return a;
  }

  const std::string name_, staging_;
  std::mutex mu_;
  std::set<std::string> dirs_;          // (mu_)
  std::map<std::string, File> files_;   // (mu_)
  uint64_t versions_ = 0;               // (mu_)
  int commits_ = 0;                     // (mu_)
  int opens_ = 0;                       // (mu_)
};

}  // namespace modelfs::fs::testing
