// tests/gtest_bridge.cc — the one C++ file: registers the C tests of
// tests/tp_test.h with GoogleTest (meson runs them with protocol 'gtest').
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

extern "C" {
#include "tp_test.h"
}

namespace {

struct CTest {
  std::string suite, name, file;
  tp_test_fn fn;
  int line;
  tp_test_data_fn data_fn; /* instead of fn, for tests registered with data */
  const void *data;
};

std::vector<CTest> &registry() {
  static std::vector<CTest> r;
  return r;
}

std::vector<std::string> &tmpdirs() {
  static std::vector<std::string> r;
  return r;
}

class CTestCase : public testing::Test {
 public:
  CTestCase(tp_test_fn fn, tp_test_data_fn data_fn, const void *data)
      : fn_(fn), data_fn_(data_fn), data_(data) {}
  void TestBody() override {
    if (data_fn_) data_fn_(data_);
    else fn_();
  }

 private:
  tp_test_fn fn_;
  tp_test_data_fn data_fn_;
  const void *data_;
};

}  // namespace

extern "C" void tp_test_register(const char *suite, const char *name, tp_test_fn fn,
                                 const char *file, int line) {
  registry().push_back(CTest{suite, name, file, fn, line, nullptr, nullptr});
}

extern "C" void tp_test_register_data(const char *suite, const char *name, tp_test_data_fn fn,
                                      const void *data, const char *file, int line) {
  registry().push_back(CTest{suite, name, file, nullptr, line, fn, data});
}

extern "C" void tp_test_fail(const char *file, int line, const char *msg) {
  ADD_FAILURE_AT(file, line) << msg;
}

extern "C" void tp_test_skip(const char *file, int line, const char *msg) {
  GTEST_SKIP_(msg) << " (" << file << ":" << line << ")";
}

extern "C" const char *tp_test_shared_dir(void) {
  const char *e = std::getenv("TP_SHARED_DIR");
  return e ? e : TP_SHARED_DIR_DEFAULT;
}

extern "C" const char *tp_test_build_dir(void) { return TP_BUILD_DIR; }
extern "C" const char *tp_test_source_dir(void) { return TP_SOURCE_DIR; }

extern "C" char *tp_test_tmpdir(void) {
  GError *err = nullptr;
  char *dir = g_dir_make_tmp("tensorplug-test-XXXXXX", &err);
  if (!dir) {
    ADD_FAILURE() << "cannot make a temporary folder: " << err->message;
    g_clear_error(&err);
    return g_strdup("/nonexistent");
  }
  tmpdirs().push_back(dir);
  return dir;
}

static void remove_tmpdirs() {
  if (std::getenv("TP_KEEP_TMP")) return;
  for (const auto &d : tmpdirs()) {
    std::string cmd = "rm -rf '" + d + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", d.c_str());
  }
}

int main(int argc, char **argv) {
  testing::InitGoogleTest(&argc, argv);
  for (const auto &t : registry()) {
    tp_test_fn fn = t.fn;
    tp_test_data_fn data_fn = t.data_fn;
    const void *data = t.data;
    testing::RegisterTest(t.suite.c_str(), t.name.c_str(), nullptr, nullptr, t.file.c_str(),
                          t.line, [fn, data_fn, data]() -> testing::Test * {
                            return new CTestCase(fn, data_fn, data);
                          });
  }
  int rc = RUN_ALL_TESTS();
  remove_tmpdirs();
  return rc;
}
