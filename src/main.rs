//! The `ibvae` command: parses the command line, runs it, and turns an error into a
//! message and a non-zero exit code.

use clap::Parser;

fn main() {
    let cli = ibvae::cli::Cli::parse();
    if let Err(e) = ibvae::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
