//! The `multipl-moe` command line: backend chosen by cargo feature, errors as one line.

mod cli;
mod inference;
mod loading;
mod logits;

fn main() {
    multipl_moe::allocator::reuse_freed_memory();
    if let Err(err) = cli::run() {
        eprintln!("error: {}", message(&err));
        std::process::exit(1);
    }
}

/// The error and its causes joined by `: ` (as `{:#}` does), leaving out a cause whose text
/// the message already ends with: the library errors print their OS error in their own text
/// and also expose it as their source.
fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.ends_with(&part) {
            text = format!("{text}: {part}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::message;
    use anyhow::Context;

    #[test]
    fn a_cause_already_in_the_text_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let repeated = anyhow::Error::new(io).context(format!(
            "/data: {}",
            std::io::Error::from(std::io::ErrorKind::NotFound)
        ));
        assert_eq!(message(&repeated), "/data: entity not found");
        let chained: anyhow::Result<()> = Err(anyhow::anyhow!("disk full")).context("saving");
        assert_eq!(message(&chained.unwrap_err()), "saving: disk full");
    }
}
