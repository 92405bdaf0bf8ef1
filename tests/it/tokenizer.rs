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

/// A prompt's special tokens are transformers 5's (`tokenizer(prompt).input_ids`, recorded by
/// `scripts/make_fixtures.py --only llama` in fixtures/tokenizer/bos-cases.json): the BOS of a
/// Llama-style post-processor is added; tokenizer_config.json's `add_bos_token` /
/// `add_eos_token` change nothing, as in transformers 5.
#[test]
fn prompt_special_tokens_follow_transformers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizer");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("bos-cases.json")).unwrap())
            .unwrap();
    let prompt = cases["prompt"].as_str().unwrap();
    let mut saw_bos = false;
    for (name, case) in cases["cases"].as_object().unwrap() {
        let dir =
            std::env::temp_dir().join(format!("multipl-moe-bos-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("tokenizer.json")).unwrap())
                .unwrap();
        if let Some(template) = case["post_processor"].as_str() {
            let single: Vec<serde_json::Value> = template
                .split(' ')
                .map(|piece| match piece {
                    "$A" => serde_json::json!({"Sequence": {"id": "A", "type_id": 0}}),
                    token => serde_json::json!({"SpecialToken": {"id": token, "type_id": 0}}),
                })
                .collect();
            json["post_processor"] = serde_json::json!({
                "type": "TemplateProcessing",
                "single": single,
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}}
            });
        }
        std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
        if !case["tokenizer_config"].is_null() {
            std::fs::write(
                dir.join("tokenizer_config.json"),
                case["tokenizer_config"].to_string(),
            )
            .unwrap();
        }
        let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        let expected: Vec<u32> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode_prompt(prompt).unwrap(), expected, "{name}");
        saw_bos |= expected.first() == tok.token_to_id("<|im_start|>").as_ref();
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(saw_bos, "some case adds a BOS");
}
