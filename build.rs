//! Builds against the LibTorch that torch-sys found (it passes the directory of its shared
//! libraries as `DEP_TCH_LIBTORCH_LIB`; the headers are in the sibling `include/`):
//!
//! - compiles the crate's own C++ file, `src/engine/ffi.cpp` (what `tch` does not bind),
//!   into a static library and links it with LibTorch's `torch_cpu` and `c10`;
//! - records the libraries' directory as an rpath in every binary of the crate, so that
//!   `ibvae` and the tests run without `LD_LIBRARY_PATH`;
//! - keeps LibTorch's CUDA library linked: nothing calls it by name, so the linker's
//!   `--as-needed` would drop it and CUDA would not be found at run time;
//! - compiles the C++ file's CUDA-graph part (`IBVAE_WITH_CUDA`) and links `torch_cuda`
//!   and `c10_cuda` when LibTorch has CUDA and CUDA's headers are found: the PyTorch
//!   wheel's `nvidia/cu13/include` (with `nvidia-cuda-crt`, which `./setup.sh` installs),
//!   `$CUDA_HOME/include` or `/usr/local/cuda/include`. Without them the graph functions
//!   report that this build has none.

use std::path::{Path, PathBuf};

/// The C++ sources of the crate, compiled into one static library.
const CPP_SOURCES: &[&str] = &[
    "src/engine/ffi.cpp",
    "src/engine/fused.cpp",
    "src/engine/mixture.cpp",
    "src/engine/profiler.cpp",
];

/// Headers of the C++ sources (rebuilt when they change).
const CPP_HEADERS: &[&str] = &["src/engine/guarded.h"];

/// The LibTorch libraries the C++ sources call.
const CPP_LINKS: &[&str] = &["torch_cpu", "c10"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let lib_dir = libtorch_lib_dir();
    let cuda = cuda_include(&lib_dir);
    if lib_dir.join("libtorch_cuda.so").exists() && cuda.is_none() {
        println!(
            "cargo:warning=LibTorch has CUDA but CUDA's headers (crt/host_config.h) were not \
             found: this build has no CUDA graphs (run ./setup.sh, or set CUDA_HOME)"
        );
    }
    compile_cpp(&lib_dir, cuda.as_deref());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// LibTorch's `lib/` directory, as torch-sys found it.
fn libtorch_lib_dir() -> PathBuf {
    let dir = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_else(|_| {
        panic!(
            "torch-sys did not say where LibTorch is (DEP_TCH_LIBTORCH_LIB is unset): \
             run ./setup.sh, or set LIBTORCH to a LibTorch 2.11 folder"
        )
    });
    std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.into())
}

/// CUDA's header folder, when LibTorch has CUDA and the headers are complete (the
/// wheel's lack `crt/host_config.h` until `nvidia-cuda-crt` is installed).
fn cuda_include(lib_dir: &Path) -> Option<PathBuf> {
    if !lib_dir.join("libtorch_cuda.so").exists() {
        return None;
    }
    let torch = lib_dir.parent()?;
    let mut candidates = vec![torch.join("../nvidia/cu13/include")];
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        candidates.push(PathBuf::from(home).join("include"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates
        .into_iter()
        .find(|dir| dir.join("cuda_runtime.h").exists() && dir.join("crt/host_config.h").exists())
}

/// Compiles [`CPP_SOURCES`] against LibTorch's headers (and CUDA's, with `cuda`) and links
/// them with [`CPP_LINKS`] (and LibTorch's CUDA libraries).
fn compile_cpp(lib_dir: &Path, cuda: Option<&Path>) {
    let root = lib_dir.parent().unwrap_or(lib_dir);
    let include = root.join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .files(CPP_SOURCES)
        // LibTorch's C++ ABI, which the PyTorch wheels have used since 2.7 (torch-sys reads
        // the same variable).
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi().as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        // No code here reads floating-point exception flags: without this GCC keeps the
        // branches of the fused loops' selections (a comparison may trap) and does not
        // vectorise them.
        .flag_if_supported("-fno-trapping-math")
        // System include folders: the warnings of LibTorch's own headers are not ours.
        .flag(format!("-isystem{}", include.display()))
        .flag(format!(
            "-isystem{}",
            include.join("torch/csrc/api/include").display()
        ));
    for source in CPP_SOURCES.iter().chain(CPP_HEADERS) {
        println!("cargo:rerun-if-changed={source}");
    }
    // With CUDA's headers first; headers that do not fit this LibTorch (another CUDA
    // version) fail to compile, and the build goes on without CUDA graphs.
    let with_cuda = cuda.is_some_and(|cuda| {
        let mut graphs = build.clone();
        graphs
            .define("IBVAE_WITH_CUDA", None)
            .flag(format!("-isystem{}", cuda.display()));
        match graphs.try_compile("ibvae_ffi") {
            Ok(()) => true,
            Err(e) => {
                println!(
                    "cargo:warning=the C++ file did not compile with CUDA's headers in {} ({e}); \
                     this build has no CUDA graphs",
                    cuda.display()
                );
                false
            }
        }
    });
    if !with_cuda {
        build.compile("ibvae_ffi");
    }
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    for lib in CPP_LINKS {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    if with_cuda {
        for lib in ["torch_cuda", "c10_cuda"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}

/// `1` (the new `std::string` ABI) unless `LIBTORCH_CXX11_ABI` says otherwise, as in
/// torch-sys.
fn cxx11_abi() -> String {
    std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned())
}
