//! docs/meson-api.md must list every route the client calls, with the same evidence tag.

use elemento_api::routes;

#[test]
fn every_route_is_documented_with_its_evidence_tag() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/meson-api.md"
    ))
    .unwrap();
    for r in routes::ALL {
        let row = doc
            .lines()
            .find(|l| {
                l.starts_with('|')
                    && l.contains(&format!("`{}`", r.path))
                    && l.contains(&format!(" {} ", r.method))
            })
            .unwrap_or_else(|| panic!("docs/meson-api.md has no row for {} {}", r.method, r.path));
        assert!(
            row.contains(r.evidence.tag()),
            "row for {} must carry {}: {row}",
            r.path,
            r.evidence.tag()
        );
        assert!(
            row.contains(&format!("`{}`", r.name)),
            "row for {} must name {}: {row}",
            r.path,
            r.name
        );
    }
}
