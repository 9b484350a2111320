//! The repo's `config.toml` is generated from the key table, so it cannot
//! drift from the code. Regenerate with `SSOCKET_BLESS=1 cargo test --test config_file`.

use std::path::Path;

#[test]
fn repo_config_toml_matches_the_key_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let expected = ssocket::config::sample_toml();
    if std::env::var_os("SSOCKET_BLESS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "config.toml is stale: run SSOCKET_BLESS=1 cargo test --test config_file");
    ssocket::config::Settings::load(Some(&path), &[], &[]).expect("the repo's config.toml loads");
}
