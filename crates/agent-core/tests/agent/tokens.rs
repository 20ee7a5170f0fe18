//! Token counts against OpenAI's own tokenizer library: `tiktoken` from PyPI (the provisioned
//! venv) counts a corpus of messages, offline, from the same rank files tiktoken-rs carries (put
//! where tiktoken caches its downloads), and every count must be the same.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use agent_core::TokenCounter;

/// Reads the rank files' directory (argv[1]) into tiktoken's cache, then counts each text of the
/// JSON list on stdin with `o200k_base` and `cl100k_base`, as ordinary text.
const COUNT: &str = r#"
import hashlib, json, os, shutil, sys, tempfile
cache = tempfile.mkdtemp()
for name in ("o200k_base", "cl100k_base"):
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    shutil.copy(os.path.join(sys.argv[1], f"{name}.tiktoken"),
                os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()))
os.environ["TIKTOKEN_CACHE_DIR"] = cache
import tiktoken
texts = json.load(sys.stdin)
print(json.dumps({name: [len(tiktoken.get_encoding(name).encode_ordinary(text)) for text in texts]
                  for name in ("o200k_base", "cl100k_base")}))
shutil.rmtree(cache)
"#;

/// Where cargo unpacked tiktoken-rs, whose `assets` hold the rank files.
fn rank_files() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registries = std::fs::read_dir(home.join("registry/src")).expect("the registry's sources");
    registries
        .flatten()
        .flat_map(|registry| {
            std::fs::read_dir(registry.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("tiktoken-rs-0.12."))
        })
        .map(|path| path.join("assets"))
        .find(|assets| assets.join("o200k_base.tiktoken").is_file())
        .expect("tiktoken-rs's sources with their rank files")
}

fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = [
        "hello world",
        "What is 2+3*4? Use the calculator tool.",
        "  leading and trailing spaces, \ttabs\nand\n\nnew lines  ",
        r#"{"order_id": 18342, "items": [{"sku": "A-113", "qty": 2}], "status": "shipped"}"#,
        "fn main() {\n    let total: u64 = (1..=10).map(|n| n * n).sum();\n    println!(\"{total}\");\n}",
        "東京の天気は晴れです。明日は雨が降るかもしれません。",
        "Ünïcödé àccents, emoji 🎉🚀 and ZWJ 👩‍💻 sequences",
        "<|endoftext|> is text here, as are <|im_start|> and <|fim_prefix|>",
        "SELECT id, name FROM users WHERE created_at > now() - interval '7 days';",
        "https://example.com/path?query=value&other=1#fragment",
        "",
    ]
    .iter()
    .map(|text| (*text).to_owned())
    .collect();
    texts.push("A long tool result line with numbers 12345 and words. ".repeat(400));
    texts
}

#[test]
fn counts_match_tiktoken_exactly_for_the_openai_encodings() {
    let tools = dev_harness::TestTools::get().expect("the test tools are provisioned");
    let texts = corpus();
    let mut child = Command::new(tools.python())
        .arg("-c")
        .arg(COUNT)
        .arg(rank_files())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&texts).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "tiktoken failed");
    let counts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for (encoding, model) in [("o200k_base", "gpt-4o"), ("cl100k_base", "gpt-4")] {
        let counter = TokenCounter::for_model(model);
        assert_eq!(counter.encoding(), encoding);
        let ours: Vec<u64> = texts.iter().map(|text| counter.text(text)).collect();
        let theirs: Vec<u64> = serde_json::from_value(counts[encoding].clone()).unwrap();
        assert_eq!(ours, theirs, "{encoding}");
    }
}
