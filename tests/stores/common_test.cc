#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "stores/common/file_util.h"
#include "stores/common/scoped_fd.h"
#include "stores/common/sqlite_db.h"
#include "stores/common/staged_file.h"
#include "stores/common/status.h"
#include "tests/stores/temp_dir.h"

namespace modelfs {
namespace {

using ::modelfs::testing::Exists;
using ::modelfs::testing::Pattern;
using ::modelfs::testing::TempDir;


class CommonTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(dir_.ok()); }
  TempDir dir_;
};

// ---- Status ----

TEST(StatusTest, ToStringNamesCodeAndMessage) {
  EXPECT_EQ(Status::Ok().ToString(), "OK");
  EXPECT_EQ(NotFound("model 7: no such model").ToString(), "NotFound: model 7: no such model");
  EXPECT_EQ(PermissionDenied("x").ToString(), "PermissionDenied: x");
  EXPECT_EQ(IsADirectory("d").ToString(), "IsADirectory: d");
}

TEST(StatusTest, ErrnoErrorCarriesStrerror) {
  Status s = ErrnoError("open /x", ENOENT);
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_EQ(s.message(), "open /x: No such file or directory");
}

TEST(StatusTest, ResultHoldsValueOrStatus) {
  Result<int> good(5);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 5);
  EXPECT_TRUE(good.status().ok());
  Result<int> bad(InvalidArgument("nope"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

// ---- ScopedFd ----

TEST_F(CommonTest, ScopedFdCloseReportsErrors) {
  auto fd = OpenFile(dir_.Sub("f"), O_RDWR | O_CREAT);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  ScopedFd a = std::move(fd).value();
  ASSERT_TRUE(a.valid());
  ScopedFd b = std::move(a);
  EXPECT_FALSE(a.valid());
  ASSERT_OK(b.Close());
  EXPECT_FALSE(b.valid());
  ASSERT_OK(b.Close());  // closing an empty handle is a no-op

  // A descriptor number that is not open: close fails with EBADF and Close() says so.
  ScopedFd bogus(1000000);
  Status s = bogus.Close();
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_NE(s.message().find("close"), std::string::npos);
}

// ---- file_util ----

TEST_F(CommonTest, PreadPwriteFullRoundTripAndShortAtEof) {
  auto fd = OpenFile(dir_.Sub("f"), O_RDWR | O_CREAT);
  ASSERT_TRUE(fd.ok());
  std::string data = Pattern(3 << 20, 1);
  ASSERT_OK(PwriteFull(fd->get(), data.data(), data.size(), 100));
  auto size = FileSize(fd->get());
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, data.size() + 100);

  std::string back(data.size() + 10, 'x');
  auto n = PreadFull(fd->get(), back.data(), back.size(), 100);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, data.size());  // short only because the file ends
  back.resize(*n);
  EXPECT_EQ(back, data);

  auto past = PreadFull(fd->get(), back.data(), 10, 1 << 30);
  ASSERT_TRUE(past.ok());
  EXPECT_EQ(*past, 0u);
}

TEST_F(CommonTest, PreadOnBadFdFails) {
  char buf[4];
  auto n = PreadFull(-1, buf, sizeof(buf), 0);
  EXPECT_FALSE(n.ok());
  EXPECT_EQ(PwriteFull(-1, buf, sizeof(buf), 0).code(), StatusCode::kIOError);
}

TEST_F(CommonTest, CopyRangeBetweenFiles) {
  std::string data = Pattern((2 << 20) + 77, 2);
  ASSERT_OK(WriteStringToFile(dir_.Sub("src"), data));
  auto src = OpenFile(dir_.Sub("src"), O_RDONLY);
  auto dst = OpenFile(dir_.Sub("dst"), O_RDWR | O_CREAT);
  ASSERT_TRUE(src.ok() && dst.ok());
  ASSERT_OK(CopyRange(src->get(), 5, dst->get(), 3, data.size() - 5));
  auto back = ReadFileToString(dir_.Sub("dst"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, std::string(3, '\0') + data.substr(5));

  // Asking for more than the source holds is an error, not a silent short copy.
  EXPECT_FALSE(CopyRange(src->get(), 0, dst->get(), 0, data.size() + 1).ok());
}

TEST_F(CommonTest, CopyRangeFallsBackWhenKernelRefuses) {
  // copy_file_range refuses overlapping ranges within one file with EINVAL; the user-space loop
  // copies them (one block here, so the overlap reads before it writes).
  ASSERT_OK(WriteStringToFile(dir_.Sub("f"), "0123456789"));
  auto fd = OpenFile(dir_.Sub("f"), O_RDWR);
  ASSERT_TRUE(fd.ok());
  ASSERT_OK(CopyRange(fd->get(), 0, fd->get(), 2, 8));
  auto back = ReadFileToString(dir_.Sub("f"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, "0101234567");
}

TEST_F(CommonTest, SameContentComparesSizeThenBytes) {
  std::string a = Pattern((1 << 20) + 5, 3);
  std::string b = a;
  b.back() ^= 1;  // differs only in the second block
  ASSERT_OK(WriteStringToFile(dir_.Sub("a"), a));
  ASSERT_OK(WriteStringToFile(dir_.Sub("a2"), a));
  ASSERT_OK(WriteStringToFile(dir_.Sub("b"), b));
  ASSERT_OK(WriteStringToFile(dir_.Sub("short"), a.substr(1)));
  ASSERT_OK(WriteStringToFile(dir_.Sub("e1"), ""));
  ASSERT_OK(WriteStringToFile(dir_.Sub("e2"), ""));
  auto open = [&](const char* n) { return std::move(OpenFile(dir_.Sub(n), O_RDONLY)).value(); };
  ScopedFd fa = open("a"), fa2 = open("a2"), fb = open("b"), fs = open("short");
  ScopedFd e1 = open("e1"), e2 = open("e2");
  EXPECT_TRUE(SameContent(fa.get(), fa2.get()).value());
  EXPECT_FALSE(SameContent(fa.get(), fb.get()).value());
  EXPECT_FALSE(SameContent(fa.get(), fs.get()).value());
  EXPECT_TRUE(SameContent(e1.get(), e2.get()).value());
  EXPECT_FALSE(SameContent(fa.get(), -1).ok());
}

TEST_F(CommonTest, OpenFileMissingIsNotFound) {
  auto fd = OpenFile(dir_.Sub("missing"), O_RDONLY);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), StatusCode::kNotFound);
  EXPECT_NE(fd.status().message().find(dir_.Sub("missing")), std::string::npos);
}

TEST_F(CommonTest, MakeDirsCreatesParentsAndAcceptsExisting) {
  std::string deep = dir_.Sub("a/b/c");
  ASSERT_OK(MakeDirs(deep));
  EXPECT_TRUE(std::filesystem::is_directory(deep));
  ASSERT_OK(MakeDirs(deep));
  ASSERT_OK(MakeDirs(deep + "/"));
  ASSERT_OK(WriteStringToFile(dir_.Sub("file"), "x"));
  EXPECT_FALSE(MakeDirs(dir_.Sub("file")).ok());
  EXPECT_FALSE(MakeDirs(dir_.Sub("file/sub")).ok());
}

TEST_F(CommonTest, ClearDirEmptiesFlatDirectory) {
  std::string d = dir_.Sub("flat");
  ASSERT_OK(MakeDirs(d));
  for (int i = 0; i < 20; ++i) ASSERT_OK(WriteStringToFile(d + "/f" + std::to_string(i), "x"));
  ASSERT_OK(ClearDir(d));
  EXPECT_TRUE(std::filesystem::is_directory(d));
  EXPECT_TRUE(std::filesystem::is_empty(d));
  EXPECT_FALSE(ClearDir(dir_.Sub("missing")).ok());
}

TEST_F(CommonTest, WholeFileHelpers) {
  std::string big = Pattern(200000, 4);  // more than one read chunk
  ASSERT_OK(WriteStringToFile(dir_.Sub("big"), big));
  EXPECT_EQ(ReadFileToString(dir_.Sub("big")).value(), big);
  ASSERT_OK(WriteStringToFile(dir_.Sub("big"), "short"));  // truncates
  EXPECT_EQ(ReadFileToString(dir_.Sub("big")).value(), "short");
  ASSERT_OK(WriteStringToFile(dir_.Sub("empty"), ""));
  EXPECT_EQ(ReadFileToString(dir_.Sub("empty")).value(), "");
  EXPECT_EQ(ReadFileToString(dir_.Sub("missing")).status().code(), StatusCode::kNotFound);
}

TEST_F(CommonTest, SyncDir) {
  ASSERT_OK(SyncDir(dir_.path()));
  EXPECT_FALSE(SyncDir(dir_.Sub("missing")).ok());
}

// ---- StagedFile ----

TEST_F(CommonTest, StagedFileIsUnlinkedUnlessMoved) {
  std::string path;
  {
    auto staged = StagedFile::Create(dir_.path());
    ASSERT_TRUE(staged.ok()) << staged.status().ToString();
    path = (*staged)->path();
    EXPECT_EQ(std::filesystem::path(path).filename().string().rfind("stage.", 0), 0u);
    EXPECT_TRUE(Exists(path));
    EXPECT_FALSE((*staged)->consumed());
    EXPECT_EQ((*staged)->Size().value(), 0u);
    EXPECT_NE(fcntl((*staged)->fd(), F_GETFD) & FD_CLOEXEC, 0);
  }
  EXPECT_FALSE(Exists(path));
}

TEST_F(CommonTest, StagedFileMoveToConsumesAndKeepsFd) {
  std::string dest = dir_.Sub("dest");
  std::string path;
  {
    auto staged = std::move(StagedFile::Create(dir_.path())).value();
    path = staged->path();
    ASSERT_OK(PwriteFull(staged->fd(), "hello", 5, 0));
    ASSERT_OK(staged->MoveTo(dest));
    EXPECT_TRUE(staged->consumed());
    EXPECT_FALSE(Exists(path));
    char buf[5];
    EXPECT_EQ(PreadFull(staged->fd(), buf, 5, 0).value(), 5u);
    EXPECT_EQ(std::string(buf, 5), "hello");
    EXPECT_EQ(staged->MoveTo(dir_.Sub("again")).code(), StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(ReadFileToString(dest).value(), "hello");  // the destination owns it now
}

TEST_F(CommonTest, StagedFileMoveBackUndoesMove) {
  auto staged = std::move(StagedFile::Create(dir_.path())).value();
  std::string path = staged->path();
  EXPECT_EQ(staged->MoveBack().code(), StatusCode::kInvalidArgument);  // nothing to undo
  ASSERT_OK(staged->MoveTo(dir_.Sub("dest")));
  ASSERT_OK(staged->MoveBack());
  EXPECT_FALSE(staged->consumed());
  EXPECT_TRUE(Exists(path));
  EXPECT_FALSE(Exists(dir_.Sub("dest")));

  // Never clobbers a file that took the staging name meanwhile.
  ASSERT_OK(staged->MoveTo(dir_.Sub("dest")));
  ASSERT_OK(WriteStringToFile(path, "intruder"));
  EXPECT_FALSE(staged->MoveBack().ok());
  EXPECT_TRUE(staged->consumed());
  EXPECT_EQ(ReadFileToString(path).value(), "intruder");
}

TEST_F(CommonTest, StagedFileMoveToFailureLeavesItStaged) {
  auto staged = std::move(StagedFile::Create(dir_.path())).value();
  EXPECT_FALSE(staged->MoveTo(dir_.Sub("no/such/dir/x")).ok());
  EXPECT_FALSE(staged->consumed());
  EXPECT_TRUE(Exists(staged->path()));
}

TEST_F(CommonTest, StagedFileCreateInMissingDirFails) {
  auto staged = StagedFile::Create(dir_.Sub("missing"));
  ASSERT_FALSE(staged.ok());
  EXPECT_NE(staged.status().message().find(dir_.Sub("missing")), std::string::npos);
}

// ---- SqliteDb ----

class SqliteTest : public CommonTest {
 protected:
  void SetUp() override {
    CommonTest::SetUp();
    auto db = SqliteDb::Open(dir_.Sub("t.db"));
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(db).value();
    ASSERT_OK(db_.Exec("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB NOT NULL, s TEXT)"));
  }
  int64_t Count() {
    auto row = db_.QueryRow("SELECT COUNT(*) FROM t");
    EXPECT_TRUE(row.ok() && row->found);
    return row->stmt.ColumnInt64(0);
  }
  SqliteDb db_;
};

TEST_F(SqliteTest, BindStepAndColumns) {
  std::string blob("a\0b", 3);
  auto changed = db_.Run("INSERT INTO t(k, v, s) VALUES(?1, ?2, ?3)", 7, SqlBlob{blob}, "text");
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  EXPECT_EQ(*changed, 1);
  EXPECT_EQ(db_.LastInsertRowid(), 7);

  auto row = db_.QueryRow("SELECT v, s, typeof(v) FROM t WHERE k=?1", int64_t{7});
  ASSERT_TRUE(row.ok() && row->found);
  EXPECT_EQ(row->stmt.ColumnBlob(0), blob);
  EXPECT_EQ(row->stmt.ColumnText(1), "text");
  EXPECT_EQ(row->stmt.ColumnText(2), "blob");

  auto none = db_.QueryRow("SELECT v FROM t WHERE k=?1", 8);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->found);
}

TEST_F(SqliteTest, EmptyBlobIsNotNull) {
  auto changed = db_.Run("INSERT INTO t(k, v, s) VALUES(1, ?1, ?2)", SqlBlob{}, nullptr);
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  auto row = db_.QueryRow("SELECT typeof(v), length(v), s IS NULL FROM t");
  ASSERT_TRUE(row.ok() && row->found);
  EXPECT_EQ(row->stmt.ColumnText(0), "blob");
  EXPECT_EQ(row->stmt.ColumnInt64(1), 0);
  EXPECT_EQ(row->stmt.ColumnInt64(2), 1);
}

TEST_F(SqliteTest, ErrorsBecomeStatuses) {
  ASSERT_TRUE(db_.Run("INSERT INTO t(k, v) VALUES(1, x'00')").ok());
  auto dup = db_.Run("INSERT INTO t(k, v) VALUES(1, x'00')");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(dup.status().message().find("UNIQUE constraint failed"), std::string::npos);

  auto null_v = db_.Run("INSERT INTO t(k, v) VALUES(2, NULL)");
  EXPECT_EQ(null_v.status().code(), StatusCode::kInvalidArgument);

  auto syntax = db_.Prepare("SELEKT 1");
  ASSERT_FALSE(syntax.ok());
  EXPECT_EQ(syntax.status().code(), StatusCode::kIOError);
  EXPECT_NE(syntax.status().message().find("SELEKT"), std::string::npos);

  EXPECT_FALSE(db_.Exec("DROP TABLE nonexistent").ok());
}

TEST_F(SqliteTest, NotADatabaseIsCorruption) {
  ASSERT_OK(WriteStringToFile(dir_.Sub("junk.db"), std::string(4096, 'j')));
  auto db = SqliteDb::Open(dir_.Sub("junk.db"));
  ASSERT_TRUE(db.ok());  // SQLite reads the header lazily
  EXPECT_EQ(db->Exec("SELECT * FROM sqlite_master").code(), StatusCode::kCorruption);
}

TEST_F(SqliteTest, TransactionRollsBackUnlessCommitted) {
  {
    auto txn = SqliteTransaction::Begin(db_, SqliteTransaction::Mode::kImmediate);
    ASSERT_TRUE(txn.ok());
    EXPECT_TRUE(db_.InTransaction());
    ASSERT_TRUE(db_.Run("INSERT INTO t(k, v) VALUES(1, x'00')").ok());
  }
  EXPECT_FALSE(db_.InTransaction());
  EXPECT_EQ(Count(), 0);
  {
    auto txn = SqliteTransaction::Begin(db_, SqliteTransaction::Mode::kDeferred);
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE(db_.Run("INSERT INTO t(k, v) VALUES(1, x'00')").ok());
    ASSERT_OK(txn->Commit());
    EXPECT_FALSE(txn->active());
    EXPECT_EQ(txn->Commit().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(Count(), 1);
  {
    auto txn = SqliteTransaction::Begin(db_, SqliteTransaction::Mode::kImmediate);
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE(db_.Run("DELETE FROM t").ok());
    ASSERT_OK(txn->Rollback());
  }
  EXPECT_EQ(Count(), 1);
  ASSERT_OK(db_.Close());
}

TEST_F(SqliteTest, StatementReuseAfterReset) {
  auto stmt = db_.Prepare("INSERT INTO t(k, v) VALUES(?1, ?2)");
  ASSERT_TRUE(stmt.ok());
  for (int i = 0; i < 5; ++i) {
    stmt->Reset();
    ASSERT_OK(stmt->Bind(i, SqlBlob{"x"}));
    ASSERT_OK(stmt->Run());
  }
  EXPECT_EQ(Count(), 5);
}

}  // namespace
}  // namespace modelfs
