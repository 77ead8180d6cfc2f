//! Records where LibTorch's shared libraries are (torch-sys passes the directory as
//! `DEP_TCH_LIBTORCH_LIB`) as an rpath in every binary of the crate, so that `ibvae` and
//! the tests run without `LD_LIBRARY_PATH`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.into());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
