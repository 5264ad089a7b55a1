#include "tools/mount_recovery.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

#include "stores/common/file_util.h"

namespace modelfs::tools {
namespace {

constexpr char kConnections[] = "/sys/fs/fuse/connections";

// /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && isdigit(s[i + 1]) && isdigit(s[i + 2]) && isdigit(s[i + 3])) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<MountEntry> Mounts() {
  std::vector<MountEntry> out;
  auto text = ReadFileToString("/proc/self/mountinfo");
  if (!text.ok()) return out;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, majmin, root, mnt, field;
    if (!(f >> id >> parent >> majmin >> root >> mnt)) continue;
    while (f >> field && field != "-") {
    }
    MountEntry m;
    if (!(f >> m.fstype >> m.source)) continue;
    m.mountpoint = Unescape(mnt);
    m.source = Unescape(m.source);
    size_t colon = majmin.find(':');
    if (colon != std::string::npos) m.minor = static_cast<unsigned>(strtoul(majmin.c_str() + colon + 1, nullptr, 10));
    out.push_back(std::move(m));
  }
  return out;
}

// Whether `inner` is `outer` or below it (both absolute, no trailing slash but "/").
bool Within(const std::string& inner, const std::string& outer) {
  if (inner == outer || outer == "/") return true;
  return inner.size() > outer.size() && inner.compare(0, outer.size(), outer) == 0 && inner[outer.size()] == '/';
}

bool LockIsFree(const std::string& data) {
  int fd = open((data + "/lock").c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return true;  // no lock file: nobody ever held it
  bool free = flock(fd, LOCK_EX | LOCK_NB) == 0;
  close(fd);  // releases it again
  return free;
}

bool WaitForLock(const std::string& data, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!LockIsFree(data)) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

int RunProgram(const std::vector<std::string>& argv) {
  pid_t child = fork();
  if (child < 0) return -1;
  if (child == 0) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 2);  // its messages would repeat ours
    execvp(args[0], args.data());
    _exit(127);
  }
  int st = 0;
  if (waitpid(child, &st, 0) < 0) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

std::optional<MountEntry> MountAt(const std::string& path) {
  std::optional<MountEntry> found;
  for (auto& m : Mounts()) {
    if (m.mountpoint == path) found = m;  // the last one is on top
  }
  return found;
}

std::optional<MountEntry> MountOfData(const std::string& data) {
  for (auto& m : Mounts()) {
    if (m.modelfs() && m.data_dir() == data) return m;
  }
  return std::nullopt;
}

pid_t DaemonPid(const std::string& data) {
  auto r = ReadFileToString(data + "/daemon.pid");
  return r.ok() ? static_cast<pid_t>(atoi(r->c_str())) : 0;
}

DaemonState StateOf(pid_t pid) {
  if (pid <= 0) return DaemonState::kGone;
  const std::string dir = "/proc/" + std::to_string(pid);
  auto comm = ReadFileToString(dir + "/comm");
  if (!comm.ok() || comm->rfind("modelfs", 0) != 0) return DaemonState::kGone;
  auto stat = ReadFileToString(dir + "/stat");
  if (!stat.ok()) return DaemonState::kGone;
  size_t paren = stat->rfind(')');
  char state = paren != std::string::npos && paren + 2 < stat->size() ? (*stat)[paren + 2] : '?';
  if (state == 'Z' || state == 'X') return DaemonState::kDying;  // its main thread exited
  auto status = ReadFileToString(dir + "/status");
  if (status.ok()) {
    for (const char* key : {"\nShdPnd:", "\nSigPnd:"}) {
      size_t at = status->find(key);
      if (at == std::string::npos) continue;
      unsigned long long mask = strtoull(status->c_str() + at + strlen(key), nullptr, 16);
      if (mask & (1ull << (SIGKILL - 1))) return DaemonState::kDying;
    }
  }
  return DaemonState::kRunning;
}

Status AbortConnection(unsigned minor) {
  const std::string abort = std::string(kConnections) + "/" + std::to_string(minor) + "/abort";
  if (access(abort.c_str(), F_OK) != 0) {
    // The control filesystem is not always mounted; it is where connections can be aborted.
    DIR* d = opendir(kConnections);
    bool empty = true;
    if (d != nullptr) {
      while (dirent* e = readdir(d)) {
        if (e->d_name[0] != '.') empty = false;
      }
      closedir(d);
    }
    if (empty && mount("fusectl", kConnections, "fusectl", 0, nullptr) != 0 && errno != EBUSY) {
      return ErrnoError(std::string("mount fusectl on ") + kConnections + " (needs root)", errno);
    }
  }
  ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(abort, O_WRONLY | O_CLOEXEC));
  if (write(fd.get(), "1", 1) != 1) return ErrnoError("write " + abort, errno);
  return Status::Ok();
}

Status Unmount(const std::string& mountpoint, bool lazy) {
  if (RunProgram({"fusermount3", lazy ? "-uz" : "-u", mountpoint}) == 0) return Status::Ok();
  // fusermount3 refuses what it did not mount itself in some setups; root can unmount directly.
  if (umount2(mountpoint.c_str(), lazy ? MNT_DETACH : 0) == 0) return Status::Ok();
  return ErrnoError(mountpoint + ": unmount", errno);
}

Result<std::string> RecoverDeadMount(const MountEntry& m, pid_t pid) {
  std::string what = m.mountpoint + ": its daemon";
  if (pid > 0) what += " (pid " + std::to_string(pid) + ")";
  what += " had died";
  // A dying daemon with a thread stuck in the kernel holds the connection open: abort it, so that
  // the thread and every process waiting on the mount get an error and go on.
  Status aborted = AbortConnection(m.minor);
  if (aborted.ok()) what += "; aborted its FUSE connection";
  RETURN_IF_ERROR(Unmount(m.mountpoint, /*lazy=*/true));
  what += "; unmounted it";
  const std::string data = m.data_dir();
  if (!data.empty() && !WaitForLock(data, std::chrono::seconds(20))) {
    return IOError(what + ", but " + data + " is still locked by pid " + std::to_string(pid) +
                   (aborted.ok() ? "" : " (" + aborted.message() + ")"));
  }
  return what;
}

Status PrepareMount(const std::string& data, const std::string& mountpoint, bool nonempty) {
  struct stat st;
  if (stat(mountpoint.c_str(), &st) != 0) {
    int err = errno;
    auto m = MountAt(mountpoint);
    if ((err == ENOTCONN || err == ECONNABORTED) && m) {
      if (!m->modelfs()) {
        return IOError(mountpoint + ": a dead " + m->fstype + " mount is there; unmount it (fusermount3 -uz " +
                       mountpoint + ")");
      }
      pid_t pid = DaemonPid(m->data_dir());
      if (StateOf(pid) == DaemonState::kRunning) {
        return IOError(mountpoint + ": a modelfs mount whose daemon (pid " + std::to_string(pid) +
                       ") does not answer; modelfs umount " + mountpoint);
      }
      ASSIGN_OR_RETURN(std::string done, RecoverDeadMount(*m, pid));
      std::cerr << "modelfs: " << done << "\n";
      if (stat(mountpoint.c_str(), &st) != 0) return ErrnoError(mountpoint, errno);
    } else {
      return IOError(mountpoint + ": mount point must be an existing folder (" + strerror(err) + ")");
    }
  }
  if (!S_ISDIR(st.st_mode)) return IOError(mountpoint + ": mount point must be a folder");
  if (auto m = MountAt(mountpoint)) {
    if (!m->modelfs()) {
      return IOError(mountpoint + ": already a mount point (" + m->fstype + " of " + m->source +
                     "); mount on an empty folder instead");
    }
    pid_t pid = DaemonPid(m->data_dir());
    if (StateOf(pid) == DaemonState::kRunning) {
      return IOError(mountpoint + ": already a modelfs mount (of " + m->data_dir() + ", daemon pid " +
                     std::to_string(pid) + "); modelfs umount " + mountpoint + " first");
    }
    ASSIGN_OR_RETURN(std::string done, RecoverDeadMount(*m, pid));
    std::cerr << "modelfs: " << done << "\n";
  }
  if (Within(mountpoint, data) || Within(data, mountpoint)) {
    return InvalidArgument("the mount point " + mountpoint + " and the data directory " + data +
                           " overlap: the daemon would serve its own store to itself; put them apart");
  }
  if (!nonempty) {
    DIR* d = opendir(mountpoint.c_str());
    size_t entries = 0;
    if (d != nullptr) {
      while (dirent* e = readdir(d)) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) ++entries;
      }
      closedir(d);
    }
    if (entries > 0) {
      return InvalidArgument(mountpoint + ": not empty (" + std::to_string(entries) +
                             (entries == 1 ? " entry" : " entries") +
                             " would be hidden); mount on an empty folder, or add -o nonempty");
    }
  }
  if (!LockIsFree(data)) {
    pid_t pid = DaemonPid(data);
    DaemonState state = StateOf(pid);
    auto m = MountOfData(data);
    if (state == DaemonState::kDying && m) {
      ASSIGN_OR_RETURN(std::string done, RecoverDeadMount(*m, pid));
      std::cerr << "modelfs: " << done << "\n";
    } else if (state == DaemonState::kDying) {
      if (!WaitForLock(data, std::chrono::seconds(20))) {
        return IOError(data + ": still locked by the dying daemon pid " + std::to_string(pid));
      }
    } else if (state == DaemonState::kRunning && m) {
      return IOError(data + ": in use by the modelfs daemon pid " + std::to_string(pid) + " mounted at " +
                     m->mountpoint + "; modelfs umount " + m->mountpoint + " first");
    } else {
      return IOError(data + ": in use by another modelfs process (a command working on the store?)");
    }
  }
  return Status::Ok();
}

}  // namespace modelfs::tools
