// The FUSE adapter: every request goes to one Core method and gets exactly one reply. This is the only
// file that sees libfuse. No exception leaves it: Core methods return Status, and every callback is
// noexcept, so an allocation failure terminates the daemon instead of unwinding through C code.
#define FUSE_USE_VERSION 312
#include "fs/fuse_mount.h"

#include <fuse_lowlevel.h>
#include <sys/xattr.h>

#include <csignal>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <sys/stat.h>

#include <thread>

#include "fs/errno_map.h"
#include "fs/log.h"

namespace modelfs::fs {
namespace {

// Sends the core's notifications to the kernel; called from the core's invalidation thread only
// (invalidation.h says why never from a request thread).
class FuseKernelCache : public KernelCache {
 public:
  explicit FuseKernelCache(fuse_session* se) : se_(se) {}
  void ForgetEntry(Ino parent, const std::string& name) override {
    // -ENOENT (the kernel had no such entry) is the common, harmless case.
    int rc = fuse_lowlevel_notify_inval_entry(se_, parent, name.data(), name.size());
    if (rc != 0 && rc != -ENOENT && rc != -ENOTCONN) {
      LogError("invalidate entry " + name + ": " + strerror(-rc));
    }
  }
  void ForgetAttributes(Ino ino, bool listing) override {
    // A file's pages are never invalidated: its bytes never change under its inode, and dropping
    // pages would wait for page locks held by reads in flight. A folder's cached listing is its pages.
    int rc = fuse_lowlevel_notify_inval_inode(se_, ino, listing ? 0 : -1, 0);
    if (rc != 0 && rc != -ENOENT && rc != -ENOTCONN) {
      LogError("invalidate inode " + std::to_string(ino) + ": " + strerror(-rc));
    }
  }

 private:
  fuse_session* se_;
};

Core& C(fuse_req_t req) { return *static_cast<Core*>(fuse_req_userdata(req)); }

Caller From(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return Caller{ctx != nullptr ? ctx->pid : 0};
}

// Replies with the errno for st; logs one line for failures that are not plain "no such entry".
void ReplyError(fuse_req_t req, const char* op, const Status& st) {
  int err = ToErrno(st);
  // ESTALE asks the kernel to look a name up again (Core::Open): part of normal operation.
  if (err != ENOENT && err != ENODATA && err != ESTALE) LogError(std::string(op) + ": " + st.message());
  fuse_reply_err(req, err);
}

fuse_entry_param ToEntry(const EntryOut& e) {
  fuse_entry_param p{};
  p.ino = e.attr.st_ino;
  p.generation = 1;
  p.attr = e.attr;
  p.attr_timeout = e.attr_timeout;
  p.entry_timeout = e.entry_timeout;
  return p;
}

void OnInit(void* userdata, fuse_conn_info* conn) noexcept {
  (void)userdata;
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  if (conn->capable & FUSE_CAP_SPLICE_READ) conn->want |= FUSE_CAP_SPLICE_READ;
  // O_TRUNC comes with the open (one request less): a writer has an inode of its own (Core::Open),
  // so the kernel may drop that inode's cached pages and size at once.
  if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
  // Inodes are immutable per content version; there is nothing for the kernel to notice by itself.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  if (conn->capable & FUSE_CAP_READDIRPLUS) {
    conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;  // always plus: every entry gets a real inode number
  }
#ifdef FUSE_CAP_HANDLE_KILLPRIV
  // No set-id bits exist here; spares a getxattr(security.capability) round trip per write.
  if (conn->capable & FUSE_CAP_HANDLE_KILLPRIV) conn->want |= FUSE_CAP_HANDLE_KILLPRIV;
#endif
  conn->max_background = 64;
}

void OnDestroy(void* userdata) noexcept {
  Status st = static_cast<Core*>(userdata)->SyncAll();
  if (!st.ok()) LogError("sync at unmount: " + st.message());
}

void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  auto r = C(req).Lookup(From(req), parent, name);
  if (!r.ok()) return ReplyError(req, "lookup", r.status());
  fuse_entry_param e = ToEntry(*r);
  fuse_reply_entry(req, &e);
}

void OnForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) noexcept {
  C(req).Forget(ino, nlookup);
  fuse_reply_none(req);
}

void OnForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) noexcept {
  for (size_t i = 0; i < count; ++i) C(req).Forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void OnGetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  (void)fi;
  auto r = C(req).GetAttr(ino);
  if (!r.ok()) return ReplyError(req, "getattr", r.status());
  fuse_reply_attr(req, &r->attr, r->attr_timeout);
}

void OnSetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) noexcept {
  SetAttrIn in;
  if (to_set & FUSE_SET_ATTR_SIZE) in.size = static_cast<uint64_t>(attr->st_size);
  if (to_set & FUSE_SET_ATTR_MODE) in.mode = attr->st_mode;
  if (to_set & FUSE_SET_ATTR_UID) in.uid = attr->st_uid;
  if (to_set & FUSE_SET_ATTR_GID) in.gid = attr->st_gid;
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
    timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    in.mtime = now;
  } else if (to_set & FUSE_SET_ATTR_MTIME) {
    in.mtime = attr->st_mtim;
  }
  if (fi != nullptr) in.fh = fi->fh;
  auto r = C(req).SetAttr(From(req), ino, in);
  if (!r.ok()) return ReplyError(req, "setattr", r.status());
  fuse_reply_attr(req, &r->attr, r->attr_timeout);
}

void OnReadLink(fuse_req_t req, fuse_ino_t ino) noexcept {
  auto r = C(req).ReadLink(ino);
  if (!r.ok()) return ReplyError(req, "readlink", r.status());
  fuse_reply_readlink(req, r->c_str());
}

void OnSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) noexcept {
  auto r = C(req).Symlink(From(req), parent, name, link);
  if (!r.ok()) return ReplyError(req, "symlink", r.status());
  fuse_entry_param e = ToEntry(*r);
  fuse_reply_entry(req, &e);
}

void OnMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept {
  (void)mode;
  auto r = C(req).MakeDir(From(req), parent, name);
  if (!r.ok()) return ReplyError(req, "mkdir", r.status());
  fuse_entry_param e = ToEntry(*r);
  fuse_reply_entry(req, &e);
}

void OnUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Status st = C(req).Unlink(From(req), parent, name);
  if (!st.ok()) return ReplyError(req, "unlink", st);
  fuse_reply_err(req, 0);
}

void OnRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Status st = C(req).RemoveDir(From(req), parent, name);
  if (!st.ok()) return ReplyError(req, "rmdir", st);
  fuse_reply_err(req, 0);
}

void OnMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) noexcept {
  (void)rdev;
  Status st = C(req).MakeSpecial(parent, name, mode);
  ReplyError(req, "mknod", st.ok() ? PermissionDenied(std::string(name) + ": not supported") : st);
}

void OnLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) noexcept {
  Status st = C(req).HardLink(ino, newparent, newname);
  ReplyError(req, "link", st.ok() ? PermissionDenied(std::string(newname) + ": not supported") : st);
}

void OnRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) noexcept {
  Status st = C(req).Rename(From(req), parent, name, newparent, newname, flags);
  if (!st.ok()) return ReplyError(req, "rename", st);
  fuse_reply_err(req, 0);
}

void ApplyOpen(fuse_file_info* fi, const OpenOut& o) {
  fi->fh = o.fh;
  fi->direct_io = o.direct_io;
  fi->keep_cache = o.keep_cache;
}

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  auto r = C(req).Open(From(req), ino, fi->flags);
  if (!r.ok()) return ReplyError(req, "open", r.status());
  ApplyOpen(fi, *r);
  // A read-only handle has nothing to commit: no FLUSH round trip at each close().
  if ((fi->flags & O_ACCMODE) == O_RDONLY) fi->noflush = 1;
  if (fuse_reply_open(req, fi) == -ENOENT) C(req).Release(r->fh);  // the opener was interrupted
}

void OnCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) noexcept {
  auto r = C(req).Create(From(req), parent, name, mode, fi->flags);
  if (!r.ok()) return ReplyError(req, "create", r.status());
  ApplyOpen(fi, r->second);
  fuse_entry_param e = ToEntry(r->first);
  if (fuse_reply_create(req, &e, fi) == -ENOENT) C(req).Release(r->second.fh);
}

void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept {
  (void)ino;
  auto r = C(req).Read(fi->fh, off, size);
  if (!r.ok()) return ReplyError(req, "read", r.status());
  if (r->length == 0) {
    fuse_reply_buf(req, nullptr, 0);
  } else if (r->data) {
    fuse_reply_buf(req, r->data->data(), r->length);
  } else {
    fuse_bufvec buf = FUSE_BUFVEC_INIT(r->length);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = r->fd;
    buf.buf[0].pos = r->offset;
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  }
}

void OnWriteBuf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi) noexcept {
  (void)ino;
  const size_t size = fuse_buf_size(in);
  auto r = C(req).WriteWith(fi->fh, off, [&](int fd, off_t at) -> Result<size_t> {
    fuse_bufvec out = FUSE_BUFVEC_INIT(size);
    out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    out.buf[0].fd = fd;
    out.buf[0].pos = at;
    ssize_t n = fuse_buf_copy(&out, in, FUSE_BUF_SPLICE_NONBLOCK);
    if (n < 0) return ErrnoError("write to staged file", static_cast<int>(-n));
    if (static_cast<size_t>(n) != size) return IOError("short write to staged file");
    return static_cast<size_t>(n);
  });
  if (!r.ok()) return ReplyError(req, "write", r.status());
  fuse_reply_write(req, *r);
}

void OnFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  (void)ino;
  // A rejected file is logged once by the core when it is rejected; every later close repeats the errno.
  fuse_reply_err(req, ToErrno(C(req).Flush(From(req), fi->fh)));
}

void OnRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  (void)ino;
  C(req).Release(fi->fh);
  fuse_reply_err(req, 0);
}

void OnFsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) noexcept {
  (void)ino;
  fuse_reply_err(req, ToErrno(C(req).Fsync(fi->fh, datasync != 0)));
}

void OnOpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  auto r = C(req).OpenDir(ino);
  if (!r.ok()) return ReplyError(req, "opendir", r.status());
  fi->fh = *r;
  // The kernel may keep listings: it drops them itself when it changes a folder, and the core drops
  // them (InvalidateListings) when a folder changes as a side effect of a change elsewhere.
  fi->cache_readdir = 1;
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

void ReadDirCommon(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                   bool plus) {
  std::string buf(size, '\0');
  size_t used = 0;
  // Offsets: 0 and 1 are "." and "..", entry i of the listing is offset i + 2.
  if (off < 2) {
    for (off_t i = off; i < 2; ++i) {
      struct stat st {};
      st.st_ino = ino;
      st.st_mode = S_IFDIR;
      const char* name = i == 0 ? "." : "..";
      size_t n;
      if (plus) {
        fuse_entry_param e{};  // ino 0: the kernel takes no reference for dot entries
        e.attr = st;
        n = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, i + 1);
      } else {
        n = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, i + 1);
      }
      if (n > size - used) break;
      used += n;
    }
  }
  uint64_t index = off < 2 ? 0 : static_cast<uint64_t>(off - 2);
  while (used < size) {
    auto r = C(req).ReadDir(fi->fh, index, plus);
    if (!r.ok()) return ReplyError(req, "readdir", r.status());
    if (r->empty()) break;
    bool full = false;
    for (auto& [name, entry] : *r) {
      const off_t next = static_cast<off_t>(index + 3);
      // Ask the size first: an entry that does not fit is not sent, and gives its reference back.
      size_t need = full ? size + 1
                    : plus ? fuse_add_direntry_plus(req, nullptr, 0, name.c_str(), nullptr, next)
                           : fuse_add_direntry(req, nullptr, 0, name.c_str(), nullptr, next);
      if (need > size - used) {
        full = true;
        if (plus) C(req).Forget(entry.attr.st_ino, 1);
        continue;
      }
      if (plus) {
        fuse_entry_param e = ToEntry(entry);
        fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e, next);
      } else {
        fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &entry.attr, next);
      }
      used += need;
      ++index;
    }
    if (full) break;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void OnReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept {
  ReadDirCommon(req, ino, size, off, fi, false);
}

void OnReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept {
  ReadDirCommon(req, ino, size, off, fi, true);
}

void OnReleaseDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  (void)ino;
  C(req).ReleaseDir(fi->fh);
  fuse_reply_err(req, 0);
}

void OnStatFs(fuse_req_t req, fuse_ino_t ino) noexcept {
  (void)ino;
  struct statvfs st {};
  Status s = C(req).StatFs(&st);
  if (!s.ok()) return ReplyError(req, "statfs", s);
  fuse_reply_statfs(req, &st);
}

void OnSetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) noexcept {
  (void)flags;
  Status st = C(req).SetXattr(ino, name, std::string_view(value, size));
  // cp -a and rsync -A probe system.posix_acl_access on every file: an everyday answer, no log line.
  if (st.code() == StatusCode::kNotSupported) return (void)fuse_reply_err(req, ENOTSUP);
  if (!st.ok()) return ReplyError(req, "setxattr", st);
  fuse_reply_err(req, 0);
}

void OnGetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
  auto r = C(req).GetXattr(ino, name);
  if (!r.ok()) {
    // Absent and unsupported attributes are everyday answers, not events worth a log line.
    if (r.status().code() == StatusCode::kNotFound) return (void)fuse_reply_err(req, ENODATA);
    if (r.status().code() == StatusCode::kNotSupported) return (void)fuse_reply_err(req, ENOTSUP);
    return ReplyError(req, "getxattr", r.status());
  }
  if (size == 0) return (void)fuse_reply_xattr(req, r->size());
  if (size < r->size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, r->data(), r->size());
}

void OnListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept {
  auto r = C(req).ListXattr(ino);
  if (!r.ok()) return ReplyError(req, "listxattr", r.status());
  std::string names;
  for (auto& n : *r) names.append(n).push_back('\0');
  if (size == 0) return (void)fuse_reply_xattr(req, names.size());
  if (size < names.size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, names.data(), names.size());
}

void OnRemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept {
  Status st = C(req).RemoveXattr(ino, name);
  if (!st.ok()) return ReplyError(req, "removexattr", st);
  fuse_reply_err(req, 0);
}

// The mount's device number, from /proc/self/mountinfo: stat() on the mount point would ask this very
// daemon, which is not serving yet.
std::string MountDevice(const std::string& mountpoint) {
  FILE* f = fopen("/proc/self/mountinfo", "re");
  if (f == nullptr) return "";
  char line[4096];
  std::string dev;
  while (fgets(line, sizeof line, f) != nullptr) {
    char majmin[64], mnt[2048];
    if (sscanf(line, "%*s %*s %63s %*s %2047s", majmin, mnt) == 2 && mountpoint == mnt) dev = majmin;
  }
  fclose(f);
  return dev;
}

void SetReadahead(const std::string& mountpoint, unsigned kb) {
  if (kb == 0) return;
  std::string dev = MountDevice(mountpoint);
  std::string path = "/sys/class/bdi/" + dev + "/read_ahead_kb";
  FILE* f = dev.empty() ? nullptr : fopen(path.c_str(), "we");
  if (f == nullptr) {
    LogInfo("readahead left at the kernel default: cannot open " + path + " (" + strerror(errno) + ")");
    return;
  }
  fprintf(f, "%u\n", kb);
  if (fclose(f) != 0) LogInfo("readahead left at the kernel default: " + path + ": " + strerror(errno));
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = OnInit;
  ops.destroy = OnDestroy;
  ops.lookup = OnLookup;
  ops.forget = OnForget;
  ops.forget_multi = OnForgetMulti;
  ops.getattr = OnGetAttr;
  ops.setattr = OnSetAttr;
  ops.readlink = OnReadLink;
  ops.symlink = OnSymlink;
  ops.mknod = OnMknod;
  ops.link = OnLink;
  ops.mkdir = OnMkdir;
  ops.unlink = OnUnlink;
  ops.rmdir = OnRmdir;
  ops.rename = OnRename;
  ops.open = OnOpen;
  ops.create = OnCreate;
  ops.read = OnRead;
  ops.write_buf = OnWriteBuf;
  ops.flush = OnFlush;
  ops.release = OnRelease;
  ops.fsync = OnFsync;
  ops.opendir = OnOpenDir;
  ops.readdir = OnReadDir;
  ops.readdirplus = OnReadDirPlus;
  ops.releasedir = OnReleaseDir;
  ops.statfs = OnStatFs;
  ops.setxattr = OnSetXattr;
  ops.getxattr = OnGetXattr;
  ops.listxattr = OnListXattr;
  ops.removexattr = OnRemoveXattr;
  return ops;
}

}  // namespace

Status ServeMount(Core& core, const MountOptions& options,
                  const std::function<void(const Status&)>& ready) {
  std::vector<std::string> argv_store = {"modelfs"};
  for (const auto& o : options.fuse_options) {
    argv_store.push_back("-o");
    argv_store.push_back(o);
  }
  std::vector<char*> argv;
  for (auto& a : argv_store) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  const fuse_lowlevel_ops ops = MakeOps();
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &core);
  fuse_opt_free_args(&args);  // libfuse may have copied and grown the vector
  if (se == nullptr) {
    Status st = InvalidArgument("cannot start FUSE session (bad -o option?)");
    ready(st);
    return st;
  }
  if (fuse_set_signal_handlers(se) != 0) {
    fuse_session_destroy(se);
    Status st = IOError("cannot install signal handlers");
    ready(st);
    return st;
  }
  if (fuse_session_mount(se, options.mountpoint.c_str()) != 0) {
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    Status st = IOError(options.mountpoint + ": cannot mount (is /dev/fuse there, the folder empty?)");
    ready(st);
    return st;
  }
  int rc;
  {
    FuseKernelCache kernel(se);
    core.SetKernelCache(&kernel);
    // Ready means a request has gone through: stat() of the root waits for the kernel to finish INIT
    // (served by the loop below). Readahead is set after INIT, which would otherwise lower it again.
    std::thread confirm([&] {
      struct stat st;
      if (stat(options.mountpoint.c_str(), &st) != 0) {
        ready(ErrnoError(options.mountpoint + ": mounted but not answering", errno));
        fuse_session_exit(se);
        return;
      }
      SetReadahead(options.mountpoint, options.readahead_kb);
      ready(Status::Ok());
    });
    fuse_loop_config* config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(config, 0);
    fuse_loop_cfg_set_max_threads(config, options.max_threads);
    fuse_loop_cfg_set_idle_threads(config, 4);
    rc = fuse_session_loop_mt(se, config);
    confirm.join();
    fuse_loop_cfg_destroy(config);
    core.SetKernelCache(nullptr);  // sends what is still queued first
  }
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);  // calls destroy -> SyncAll
  if (rc != 0 && rc != SIGINT && rc != SIGTERM && rc != SIGHUP) {
    return IOError("FUSE loop ended with " + std::to_string(rc));
  }
  return Status::Ok();
}

}  // namespace modelfs::fs
