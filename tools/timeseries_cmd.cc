#include "tools/timeseries_cmd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <vector>

#include "stores/common/file_util.h"
#include "stores/common/staged_file.h"
#include "stores/timeseries/timeseries_store.h"

namespace modelfs {
namespace {

struct TimeseriesArgs {
  std::string action;
  std::string id;
  std::string file = "-";
};

int Fail(const std::string& msg) {
  std::cerr << "modelfs timeseries: " << msg << "\n";
  return 1;
}

int Run(const TimeseriesArgs& a, const std::string& data) {
  auto opened = timeseries::TimeSeriesStore::Open(data + "/timeseries");
  if (!opened.ok()) return Fail(opened.status().message());
  auto& store = **opened;
  if (a.action == "put") {
    auto staged = StagedFile::CreateFrom(store.staging_dir(), a.file);
    if (!staged.ok()) return Fail(staged.status().message());
    std::optional<std::string_view> id;
    if (!a.id.empty()) id = a.id;
    auto r = store.Commit(id, **staged);
    if (!r.ok()) return Fail((a.file == "-" ? "stdin" : a.file) + ": " + r.status().message());
    std::cout << r->id << "\n";
    return 0;
  }
  if (a.action == "get") {
    auto d = store.OpenData(a.id);
    if (!d.ok()) return Fail(d.status().message());
    const uint64_t size = d->info.length * 16;
    if (a.file == "-") {
      Status st = CopyToStream(d->fd.get(), 0, STDOUT_FILENO, size);
      return st.ok() ? 0 : Fail(a.id + ": to stdout: " + st.message());
    }
    auto out = OpenFile(a.file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (!out.ok()) return Fail(out.status().message());
    Status st = CopyRange(d->fd.get(), 0, out->get(), 0, size);
    if (st.ok()) st = out->Close();
    return st.ok() ? 0 : Fail(st.message());
  }
  if (a.action == "show") {
    // Text for people: one "time value" line per point, printed from the mapped file (no copy).
    auto view = store.Get(a.id);
    if (!view.ok()) return Fail(view.status().message());
    for (size_t i = 0; i < view->size(); ++i) {
      std::printf("%.17g %.17g\n", view->times()[i], view->values()[i]);
    }
    return std::fflush(stdout) == 0 ? 0 : Fail("stdout: write failed");
  }
  if (a.action == "size") {
    auto n = store.Size(a.id);
    if (!n.ok()) return Fail(n.status().message());
    std::cout << *n << "\n";
    return 0;
  }
  if (a.action == "list") {
    for (const auto& s : store.List()) std::cout << s.id << "\t" << s.length << "\n";
    return 0;
  }
  if (a.action == "rm") {
    Status st = store.Remove(a.id);
    return st.ok() ? 0 : Fail(st.message());
  }
  return Fail("unknown action " + a.action);
}

}  // namespace

std::function<int(const std::string&)> AddTimeseriesCommand(CLI::App& app, CLI::App** sub) {
  auto a = std::make_shared<TimeseriesArgs>();
  auto* t = app.add_subcommand("timeseries", "Time-series store without a mount");
  *sub = t;
  t->require_subcommand(1);
  auto* put = t->add_subcommand(
      "put", "Store FILE (2×N little-endian float64: N times, then N values; '-': stdin); prints the id");
  put->add_option("--id", a->id, "Series id (default: a new UUID)");
  put->add_option("file", a->file, "Input file, '-' for stdin")->required();
  auto* get = t->add_subcommand("get", "Write the series' 2×N float64 bytes to FILE (default stdout)");
  get->add_option("id", a->id)->required();
  get->add_option("file", a->file, "Output file, '-' for stdout");
  t->add_subcommand("show", "Print the series as 'time value' lines")->add_option("id", a->id)->required();
  t->add_subcommand("size", "Print N, the number of points")->add_option("id", a->id)->required();
  t->add_subcommand("list", "Print 'id<TAB>N' for every series");
  t->add_subcommand("rm", "Delete a series")->add_option("id", a->id)->required();
  return [a, t](const std::string& data) {
    for (auto* s : t->get_subcommands()) a->action = s->get_name();
    return Run(*a, data);
  };
}

}  // namespace modelfs
