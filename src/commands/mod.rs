//! What each `ibvae` command does, given its settings. `cli.rs` only parses the command
//! line into these requests; `main` turns an error into a message and an exit code.

pub mod bench;
pub mod evaluate;
pub mod plot;
pub mod reference;
pub mod sample;
pub mod tools;
pub mod train;

/// A progress bar over the rows of the image being drawn.
pub(crate) fn row_bar(rows: usize, what: &str) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(rows as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} row {{pos}}/{{len}} [{{elapsed_precise}} eta {{eta_precise}}]"
        ))
        .expect("a valid progress template"),
    );
    bar
}
