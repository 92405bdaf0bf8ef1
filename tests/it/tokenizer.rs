//! Qwen-style byte-level BPE via the `tokenizers` crate: the fixture made by
//! scripts/make_fixtures.py (Qwen2's pre-tokenizer regex + byte-level model).

use std::path::Path;

use multipl_moe::train::data::tokenizer::TextTokenizer;

fn fixture() -> TextTokenizer {
    TextTokenizer::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizer/tokenizer.json"),
    )
    .unwrap()
}

#[test]
fn round_trips_code_in_all_six_languages() {
    let tok = fixture();
    let samples = [
        "def add(a, b):\n    return a + b  # π ≈ 3.14\n",
        "public class Main { public static void main(String[] args) { System.out.println(\"héllo\"); } }",
        "#include <vector>\nint sum(const std::vector<int>& v) { return v.empty() ? 0 : v[0]; }\n",
        "fn main() {\n    let s: &str = \"日本語\";\n    println!(\"{s:?}\");\n}\n",
        "package main\n\nfunc main() {\n\tfor i := 0; i < 3; i++ {}\n}\n",
        "def greet(name)\n  puts \"Hello, #{name}! 🎉\"\nend\n",
    ];
    for text in samples {
        let ids = tok.encode(text).unwrap();
        assert!(!ids.is_empty());
        assert_eq!(tok.decode(&ids).unwrap(), text, "round trip");
    }
}

#[test]
fn special_tokens_map_to_their_ids() {
    let tok = fixture();
    let eos = tok.token_to_id("<|endoftext|>").unwrap();
    let im_start = tok.token_to_id("<|im_start|>").unwrap();
    assert_eq!(tok.eos(), eos);
    assert_eq!(tok.encode("<|im_start|>user").unwrap()[0], im_start);
    assert_eq!(tok.encode("x<|endoftext|>").unwrap().last(), Some(&eos));
}

#[test]
fn missing_tokenizer_file_is_an_error() {
    let err = TextTokenizer::from_file(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );
}
