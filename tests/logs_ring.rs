//! `logSizeLimit` (issue 4 point 6): the process-wide logger keeps the last
//! N entries in memory. A test binary of its own, because `logs::init`
//! installs the global subscriber once per process.

use ssocket::config::Settings;

#[test]
fn the_logger_keeps_the_last_log_size_limit_entries() {
    let mut settings = Settings::load(None, &[], &[]).expect("defaults");
    settings.log_size_limit = 5;
    settings.print_log_to_console = false;
    settings.log_level = 0;
    assert!(ssocket::logs::recent().is_empty(), "nothing before init");
    // RUST_LOG would win over logLevel; this test needs the warnings kept.
    std::env::remove_var("RUST_LOG");
    ssocket::logs::init(&settings);

    // Warnings pass every logLevel filter (and any RUST_LOG but `error`/`off`).
    for i in 0..10 {
        tracing::warn!(n = i, "entry {i}");
    }
    let recent = ssocket::logs::recent();
    let expected: Vec<String> = (5..10).map(|i| format!("entry {i}")).collect();
    assert_eq!(recent.len(), 5, "{recent:?}");
    for (line, want) in recent.iter().zip(&expected) {
        assert!(line.contains(want) && line.starts_with("WARN"), "`{line}` should be `{want}`: {recent:?}");
    }
    // The logger is installed once: a second init changes nothing.
    let mut bigger = settings.clone();
    bigger.log_size_limit = 100;
    ssocket::logs::init(&bigger);
    tracing::error!("after a second init");
    let recent = ssocket::logs::recent();
    assert_eq!(recent.len(), 5, "{recent:?}");
    assert!(recent[4].starts_with("ERROR") && recent[4].ends_with("after a second init"), "{recent:?}");
    assert!(recent[0].contains("entry 6"), "{recent:?}");
}

#[test]
fn the_default_keeps_one_entry() {
    // The spec's default logSizeLimit is 1.
    assert_eq!(Settings::load(None, &[], &[]).expect("defaults").log_size_limit, 1);
}
