//! docs/SECURITY.md's table of who may call what is the proto's: generated from the access
//! declarations of every RPC.

const BEGIN: &str = "<!-- access:begin";
const END: &str = "<!-- access:end -->";

#[test]
fn the_security_document_lists_exactly_the_declared_access_of_every_rpc() {
    // Proves the document shows each RPC with the roles and services its proto declaration
    // admits; regenerate it with `cargo run -p subsidy --bin subsidy -- access` when this
    // fails.
    let document = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/SECURITY.md"
    ))
    .expect("read docs/SECURITY.md");
    let start = document.find(BEGIN).expect("the access:begin marker");
    let start = start
        + document[start..]
            .find('\n')
            .expect("a line after the marker")
        + 1;
    let end = document.find(END).expect("the access:end marker");
    assert_eq!(
        &document[start..end],
        subsidy::launch::access_table(),
        "docs/SECURITY.md's access table differs from `subsidy access`"
    );
}
