//! Writes docs/reliability.md from the records the reliability tests left in target/reliability.

fn main() {
    let rows = elemento_e2e::reliability::rows();
    if rows.is_empty() {
        eprintln!(
            "no records in {}: run the reliability tests first",
            elemento_e2e::reliability::dir().display()
        );
        std::process::exit(1);
    }
    let path = elemento_e2e::repo_root().join("docs/reliability.md");
    std::fs::write(&path, elemento_e2e::reliability::markdown(&rows))
        .expect("write docs/reliability.md");
    println!("wrote {} ({} rows)", path.display(), rows.len());
}
