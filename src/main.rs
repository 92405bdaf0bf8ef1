//! The `multipl-moe` command line: backend chosen by cargo feature, errors as one line.

mod cli;
mod inference;

fn main() {
    if let Err(err) = cli::run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
