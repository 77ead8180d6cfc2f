//! Records where LibTorch's shared libraries are (torch-sys passes the directory as
//! `DEP_TCH_LIBTORCH_LIB`) as an rpath in every binary of the crate, so that `ibvae` and
//! the tests run without `LD_LIBRARY_PATH`, and keeps LibTorch's CUDA library linked:
//! nothing calls it by name, so the linker's `--as-needed` would drop it and CUDA would
//! not be found at run time.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.into());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    if dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
