// The user-typed text forms of /embeddings: the groups file and view conditions.
#include "fs/embeddings_text.h"

#include <gtest/gtest.h>

namespace modelfs::fs {
namespace {

TEST(GroupsText, FormatsAndParsesBack) {
  std::map<int, embeddings::GroupConfig> groups;
  groups[0] = {16, "adam", {{"gamma", 0.001}, {"beta1", 0.9}}, "random_normal", {{"stddev", 0.01}}};
  groups[255] = {4, "sgd", {}, "zeros", {}};
  std::string text = FormatGroups(groups);
  EXPECT_NE(text.find("0 16 adam(beta1=0.9,gamma=0.001) random_normal(stddev=0.01)\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("255 4 sgd zeros\n"), std::string::npos) << text;
  auto parsed = ParseGroups(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].dim, 16);
  EXPECT_EQ((*parsed)[0].optimizer_params.at("gamma"), 0.001);
  EXPECT_EQ((*parsed)[255].initializer, "zeros");
  EXPECT_EQ(FormatGroups(*parsed), text) << "format(parse(format(x))) is stable";
}

TEST(GroupsText, RejectsBadLinesNamingTheLine) {
  auto bad = [](const std::string& text) { return ParseGroups(text).status(); };
  EXPECT_NE(bad("0 16 adam\n").message().find("line 1"), std::string::npos);
  EXPECT_NE(bad("# ok\n256 16 sgd zeros\n").message().find("line 2"), std::string::npos);
  EXPECT_EQ(bad("0 0 sgd zeros").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad("0 -3 sgd zeros").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad("0 4 sgd(gamma) zeros").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad("0 4 sgd(gamma=x) zeros").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad("0 4 sgd(gamma=1 zeros").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad("0 4 sgd zeros\n0 8 sgd zeros").code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ParseGroups("\n# nothing\n").ok());
}

TEST(ViewNames, ParseConditions) {
  auto v = ParseView("dump@min_count=3,expire_days=100", true);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->first, "dump");
  EXPECT_EQ(*v->second.min_count, 3);
  EXPECT_EQ(*v->second.expire_days, 100);
  EXPECT_FALSE(v->second.group);
  v = ParseView("dump@group=7", true);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v->second.group, 7);
  v = ParseView("dump", true);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->second.min_count);
  EXPECT_FALSE(ParseView("dump@", true).ok());
  EXPECT_FALSE(ParseView("dump@min_count", true).ok());
  EXPECT_FALSE(ParseView("dump@min_count=-1", true).ok());
  EXPECT_FALSE(ParseView("dump@min_count=1,min_count=2", true).ok());
  EXPECT_FALSE(ParseView("dump@colour=3", true).ok());
  EXPECT_FALSE(ParseView("dump@group=256", true).ok());
  EXPECT_FALSE(ParseView("5@group=1", false).ok()) << "group/<g> names its group already";
}

}  // namespace
}  // namespace modelfs::fs
