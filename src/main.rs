//! The `multipl-moe` command line: backend chosen by cargo feature, errors as one line.

mod cli;
mod inference;
mod loading;
mod logits;

fn main() {
    multipl_moe::allocator::reuse_freed_memory();
    if let Err(err) = cli::run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
