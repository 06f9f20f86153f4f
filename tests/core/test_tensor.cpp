#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/npy.h"
#include "core/tensor.h"
#include "test_util.h"

using namespace minidl;

TEST_SUITE("core/tensor") {
  TEST_CASE("creation, shape and element access") {
    Tensor t = Tensor::full({2, 3, 4}, 2.5);
    CHECK(t.dim() == 3);
    CHECK(t.numel() == 24);
    CHECK(t.size(-1) == 4);
    CHECK(t.strides() == Shape{12, 4, 1});
    CHECK(t.nbytes() == 96);
    CHECK(t.at({1, 2, 3}) == 2.5);
    t.set(23, -1.0);
    CHECK(t.at({1, 2, 3}) == -1.0);
    CHECK(t.describe() == "f32[2,3,4] on cpu");
    CHECK(Tensor::zeros({3}).get(2) == 0.0);
    CHECK(Tensor::ones({3}, DType::F64).get(1) == 1.0);
    CHECK_THROWS_WITH_AS(t.size(3), doctest::Contains("out of range"), Error);
    CHECK_THROWS_WITH_AS(t.at({2, 0, 0}), doctest::Contains("out of range for f32[2,3,4]"), Error);
    CHECK_THROWS_WITH_AS(t.data<double>(), doctest::Contains("f32[2,3,4]"), Error);
  }

  TEST_CASE("random tensors are seeded and in range") {
    Tensor a = Tensor::uniform({1000}, -2, 3, 7), b = Tensor::uniform({1000}, -2, 3, 7), c = Tensor::uniform({1000}, -2, 3, 8);
    CHECK(max_abs_diff(a, b) == 0.0);
    CHECK(max_abs_diff(a, c) > 0.1);
    double lo = 1e9, hi = -1e9, sum = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      lo = std::min(lo, a.get(i));
      hi = std::max(hi, a.get(i));
    }
    CHECK(lo >= -2);
    CHECK(hi < 3);
    CHECK(hi - lo > 4.5);
    Tensor n = Tensor::normal({20000}, 1.5, 2.0, 3, DType::F64);
    for (int64_t i = 0; i < n.numel(); ++i) sum += n.get(i);
    CHECK(sum / n.numel() == doctest::Approx(1.5).epsilon(0.05));
  }

  TEST_CASE("copy, dtype conversion and reshape views") {
    Tensor a = Tensor::uniform({4, 5}, 0, 1, 1);
    Tensor b = a.clone();
    b.set(0, 100);
    CHECK(a.get(0) != 100);  // clone does not share storage
    Tensor r = a.reshape({-1, 2});
    CHECK(r.shape() == Shape{10, 2});
    r.set(3, 42);
    CHECK(a.get(3) == 42);  // reshape is a view
    Tensor d = a.to(DType::F64);
    CHECK(d.dtype() == DType::F64);
    CHECK(max_abs_diff(d.to(DType::F32), a) == 0.0);
    CHECK_THROWS_WITH_AS(a.reshape({3, -1}), doctest::Contains("cannot reshape f32[4,5]"), Error);
    CHECK_THROWS_WITH_AS(a.reshape({-1, -1}), doctest::Contains("more than one -1"), Error);
    Tensor e = Tensor::zeros({4, 4});
    CHECK_THROWS_WITH_AS(e.copy_from(a), doctest::Contains("differ in shape"), Error);
  }

  TEST_CASE("error metrics") {
    Tensor a = Tensor::from_vector(std::vector<float>{3, 4}, {2});
    Tensor b = Tensor::from_vector(std::vector<float>{3, 5}, {2});
    CHECK(max_abs_diff(a, b) == 1.0);
    CHECK(rel_l2_error(b, a) == doctest::Approx(0.2));
    Tensor c = a.clone();
    c.set(1, std::nan(""));
    CHECK_FALSE(all_finite(c));
    CHECK(std::isnan(rel_l2_error(c, a)));
  }
}

TEST_SUITE("core/npy") {
  TEST_CASE("round trip f32 and f64, including scalars") {
    auto dir = std::filesystem::temp_directory_path() / "minidl_npy_test";
    std::filesystem::create_directories(dir);
    for (DType t : {DType::F32, DType::F64}) {
      for (Shape s : {Shape{2, 3, 5}, Shape{7}, Shape{}}) {
        Tensor a = Tensor::normal(s, 0.5, 2, 11, t);
        std::string p = (dir / "a.npy").string();
        save_npy(p, a);
        Tensor b = load_npy(p);
        CHECK(b.shape() == s);
        CHECK(b.dtype() == t);
        CHECK(max_abs_diff(a, b) == 0.0);
      }
    }
  }

  TEST_CASE("reads what NumPy writes") {
    // np.save of np.arange(6, dtype='<f4').reshape(2, 3): header written by NumPy 1.x.
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    header.append(128 - 10 - header.size() - 1, ' ');
    header += '\n';
    auto path = (std::filesystem::temp_directory_path() / "minidl_np.npy").string();
    {
      std::ofstream f(path, std::ios::binary);
      f.write("\x93NUMPY\x01\x00", 8);
      char len[2] = {static_cast<char>(header.size()), 0};
      f.write(len, 2);
      f << header;
      for (int i = 0; i < 6; ++i) {
        float v = static_cast<float>(i);
        f.write(reinterpret_cast<const char*>(&v), 4);
      }
    }
    Tensor t = load_npy(path);
    CHECK(t.shape() == Shape{2, 3});
    CHECK(t.at({1, 2}) == 5.0);
  }

  TEST_CASE("malformed and truncated files give clear errors") {
    auto dir = std::filesystem::temp_directory_path();
    std::string good = (dir / "minidl_good.npy").string();
    save_npy(good, Tensor::uniform({4, 4}, 0, 1, 3));
    std::ifstream in(good, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto write = [&](const std::string& name, const std::string& content) {
      std::string p = (dir / name).string();
      std::ofstream f(p, std::ios::binary);
      f << content;
      return p;
    };
    CHECK_THROWS_WITH_AS(load_npy(write("minidl_trunc.npy", bytes.substr(0, bytes.size() - 5))),
                         doctest::Contains("truncated"), Error);
    CHECK_THROWS_WITH_AS(load_npy(write("minidl_trunc_hdr.npy", bytes.substr(0, 20))),
                         doctest::Contains("truncated in its header"), Error);
    CHECK_THROWS_WITH_AS(load_npy(write("minidl_magic.npy", "hello world, not numpy")), doctest::Contains("bad magic"),
                         Error);
    std::string i8 = bytes;
    i8.replace(i8.find("<f4"), 3, "<i8");
    CHECK_THROWS_WITH_AS(load_npy(write("minidl_i8.npy", i8)), doctest::Contains("unsupported dtype"), Error);
    std::string fortran = bytes;
    fortran.replace(fortran.find("False"), 5, "True ");
    CHECK_THROWS_WITH_AS(load_npy(write("minidl_f.npy", fortran)), doctest::Contains("Fortran"), Error);
    CHECK_THROWS_WITH_AS(load_npy((dir / "minidl_does_not_exist.npy").string()), doctest::Contains("cannot open"), Error);
  }
}
