//! The repo's `config.toml` and the README's key table are generated from
//! the key table in `src/config.rs`, so they cannot drift from the code.
//! Regenerate both with `SSOCKET_BLESS=1 cargo test --test config_file`.

use std::path::{Path, PathBuf};

fn repo(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
}

fn bless() -> bool {
    std::env::var_os("SSOCKET_BLESS").is_some()
}

#[test]
fn repo_config_toml_matches_the_key_table() {
    let path = repo("config.toml");
    let expected = ssocket::config::sample_toml();
    if bless() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "config.toml is stale: run SSOCKET_BLESS=1 cargo test --test config_file");
    ssocket::config::Settings::load(Some(&path), &[], &[]).expect("the repo's config.toml loads");
}

#[test]
fn readme_key_table_matches_the_key_table() {
    const START: &str = "<!-- keys:start -->\n";
    const END: &str = "<!-- keys:end -->";
    let path = repo("README.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = text.split_once(START).expect("README has the keys:start marker");
    let (_, tail) = rest.split_once(END).expect("README has the keys:end marker");
    let expected = format!("{head}{START}{}{END}{tail}", ssocket::config::markdown_table());
    if bless() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    assert_eq!(text, expected, "README key table is stale: run SSOCKET_BLESS=1 cargo test --test config_file");
}

#[test]
fn readme_error_table_lists_every_error_code() {
    let text = std::fs::read_to_string(repo("README.md")).unwrap();
    let (_, section) = text.split_once("### Errors").expect("README has an Errors section");
    for code in ssocket::errors::ErrorCode::ALL {
        let row = format!("| `{}` |", code.as_str());
        assert!(section.contains(&row), "README's error table has no row for `{code}`");
    }
}
