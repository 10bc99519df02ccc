// Python bindings of skcl._C: every compiled CPU kernel is exposed here and
// reached from Python only through skcl/kernels.py.
//
// Inputs are coerced to C-contiguous float32 arrays; outputs written in place
// are checked (dtype, contiguity, writability, shape) and never copied. Every
// check happens before memory is touched and raises ValueError or TypeError;
// the GIL is released around the loops.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "build_info.hpp"
#include "fisher.hpp"
#include "gem.hpp"
#include "herding.hpp"

namespace py = pybind11;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

void require_ndim(const py::array& a, py::ssize_t ndim, const char* name) {
    if (a.ndim() != ndim) {
        throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) +
                              "-D, got " + std::to_string(a.ndim()) + "-D");
    }
}

// An output buffer: float32, C-contiguous, writable, of the given shape.
float* output_buffer(py::array& a, std::initializer_list<py::ssize_t> shape, const char* name) {
    if (!a.dtype().is(py::dtype::of<float>())) {
        throw py::type_error(std::string(name) + " must be float32, got " +
                             std::string(py::str(a.dtype())));
    }
    if (!(a.flags() & py::array::c_style)) {
        throw py::value_error(std::string(name) + " must be C-contiguous");
    }
    if (!a.writeable()) throw py::value_error(std::string(name) + " must be writable");
    if (a.ndim() != static_cast<py::ssize_t>(shape.size())) {
        throw py::value_error(std::string(name) + " must be " + std::to_string(shape.size()) +
                              "-D, got " + std::to_string(a.ndim()) + "-D");
    }
    py::ssize_t axis = 0;
    for (py::ssize_t n : shape) {
        if (a.shape(axis) != n) {
            throw py::value_error(std::string(name) + " has length " +
                                  std::to_string(a.shape(axis)) + " on axis " +
                                  std::to_string(axis) + ", expected " + std::to_string(n));
        }
        ++axis;
    }
    return static_cast<float*>(a.mutable_data());
}

skcl::ElementOp parse_op(const std::string& mode) {
    if (mode == "square") return skcl::ElementOp::Square;
    if (mode == "abs") return skcl::ElementOp::Abs;
    throw py::value_error("mode must be 'square' or 'abs', got '" + mode + "'");
}

// GEM's t: at most kGemMaxTasks rows, so the Gram matrix and the solve stay bounded.
void require_gem_tasks(py::ssize_t t) {
    if (t > skcl::kGemMaxTasks) {
        throw py::value_error("GEM supports at most " + std::to_string(skcl::kGemMaxTasks) +
                              " memory gradients (rows of G), got " + std::to_string(t) +
                              ": the Gram matrix and the dual solve grow as t^2 and t^3");
    }
}

void require_finite_scalar(double x, const char* name) {
    if (!std::isfinite(x) || x < 0.0) {
        throw py::value_error(std::string(name) + " must be a finite number >= 0");
    }
}

py::array_t<int64_t> herding(const FloatArray& F, py::ssize_t m, py::ssize_t takeover_at) {
    require_ndim(F, 2, "features");
    const py::ssize_t n = F.shape(0), d = F.shape(1);
    if (m < 0 || m > n) {
        throw py::value_error("m must satisfy 0 <= m <= n_samples = " + std::to_string(n) +
                              ", got " + std::to_string(m));
    }
    if (takeover_at < 0) throw py::value_error("takeover_at must be >= 0");
    py::array_t<int64_t> out(m);
    bool finite;
    {
        py::gil_scoped_release release;
        finite = skcl::herding_select(F.data(), n, d, m, out.mutable_data(), takeover_at);
    }
    if (!finite) throw py::value_error("features contain NaN or infinity");
    return out;
}

py::array_t<double> gem_gram(const FloatArray& G, const FloatArray& g) {
    require_ndim(G, 2, "G");
    require_ndim(g, 1, "g");
    const py::ssize_t t = G.shape(0), P = G.shape(1);
    if (g.shape(0) != P) {
        throw py::value_error("g has " + std::to_string(g.shape(0)) + " entries but G has " +
                              std::to_string(P) + " columns");
    }
    require_gem_tasks(t);
    py::array_t<double> gram({t + 1, t + 1});
    {
        py::gil_scoped_release release;
        skcl::gem_gram(G.data(), g.data(), t, P, gram.mutable_data());
    }
    return gram;
}

py::array_t<double> gem_solve_dual(const DoubleArray& gram, double margin, double eps) {
    require_ndim(gram, 2, "gram");
    const py::ssize_t r = gram.shape(0);
    if (r < 1 || gram.shape(1) != r) throw py::value_error("gram must be square and non-empty");
    require_gem_tasks(r - 1);
    require_finite_scalar(margin, "margin");
    require_finite_scalar(eps, "eps");
    const double* p = gram.data();
    for (py::ssize_t i = 0; i < r * r; ++i) {
        if (!std::isfinite(p[i])) throw py::value_error("gram contains NaN or infinity");
    }
    std::vector<double> v;
    try {
        py::gil_scoped_release release;
        v = skcl::gem_solve_dual(p, r - 1, margin, eps);
    } catch (const std::domain_error& e) {
        throw py::value_error(std::string(e.what()) + "; use eps > 0");
    }
    py::array_t<double> out(static_cast<py::ssize_t>(v.size()));
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

py::array_t<float> gem_apply(const FloatArray& G, const FloatArray& g, const DoubleArray& v) {
    require_ndim(G, 2, "G");
    require_ndim(g, 1, "g");
    require_ndim(v, 1, "v");
    const py::ssize_t t = G.shape(0), P = G.shape(1);
    if (g.shape(0) != P) throw py::value_error("g and the columns of G differ in length");
    if (v.shape(0) != t) throw py::value_error("v must have one entry per row of G");
    py::array_t<float> out(P);
    {
        py::gil_scoped_release release;
        skcl::gem_apply(G.data(), g.data(), v.data(), t, P, out.mutable_data());
    }
    return out;
}

void accumulate_outer(const FloatArray& D, const FloatArray& A, py::array C,
                      const std::string& mode) {
    require_ndim(D, 2, "delta");
    require_ndim(A, 2, "activations");
    const skcl::ElementOp op = parse_op(mode);
    const py::ssize_t B = D.shape(0), O = D.shape(1), I = A.shape(1);
    if (A.shape(0) != B) {
        throw py::value_error("delta has " + std::to_string(B) + " rows but activations have " +
                              std::to_string(A.shape(0)));
    }
    float* c = output_buffer(C, {O, I}, "out");
    py::gil_scoped_release release;
    skcl::accumulate_outer(op, D.data(), A.data(), B, O, I, c);
}

void accumulate_rows(const FloatArray& X, py::array out, const std::string& mode) {
    require_ndim(X, 2, "X");
    const skcl::ElementOp op = parse_op(mode);
    float* o = output_buffer(out, {X.shape(1)}, "out");
    py::gil_scoped_release release;
    skcl::accumulate_rows(op, X.data(), X.shape(0), X.shape(1), o);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "skcl compiled CPU kernels";

    m.def("build_info", []() {
        const skcl::BuildInfo info = skcl::build_info();
        py::dict d;
        d["compiler"] = info.compiler;
        d["cxx_standard"] = info.cxx_standard;
        d["openmp"] = info.openmp;
        d["openmp_version"] = info.openmp_version;
        d["max_threads"] = info.max_threads;
        d["flags"] = info.flags;
        d["simd"] = info.simd;
        return d;
    }, "Compiler, flags, SIMD level and OpenMP support skcl._C was built with.");

    m.attr("gem_max_tasks") = skcl::kGemMaxTasks;
    m.attr("gem_scratch_bytes") = skcl::kGemScratchBytes;
    m.def("herding", &herding, py::arg("features"), py::arg("m"), py::arg("takeover_at") = 0,
          "Indices of m herding picks (iCaRL) from the rows of features (n x d). "
          "takeover_at > 0 (tests only) forces the parallel path's single-thread "
          "takeover after that pick.");
    m.def("gem_gram", &gem_gram, py::arg("G"), py::arg("g"),
          "Gram matrix ((t+1) x (t+1), float64) of the rows of G (t x P) and g (P).");
    m.def("gem_solve_dual", &gem_solve_dual, py::arg("gram"), py::arg("margin"), py::arg("eps"),
          "Solution v of GEM's dual QP from the Gram matrix of gem_gram.");
    m.def("gem_apply", &gem_apply, py::arg("G"), py::arg("g"), py::arg("v"),
          "g + G^T v as a new float32 array.");
    m.def("accumulate_outer", &accumulate_outer, py::arg("delta"), py::arg("activations"),
          py::arg("out"), py::arg("mode"),
          "out += op(delta)^T op(activations) in place, op = 'square' or 'abs'.");
    m.def("accumulate_rows", &accumulate_rows, py::arg("X"), py::arg("out"), py::arg("mode"),
          "out += sum over rows of op(X) in place, op = 'square' or 'abs'.");
}
